"""The repository cites sources its users can follow: the papers (section, equation, table,
figure), the authors' released code and the project's own docs/. Internal design notes are not
shipped, so no tracked text file may refer to them ("<notes> §2.1", "the <notes>'s checks",
"shared/<notes>/x.md", ...)."""
import os
import re
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THIS_FILE = os.path.relpath(os.path.abspath(__file__), REPO)

TEXT_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".txt", ".cfg", ".toml")
TEXT_NAMES = ("Makefile",)

# Built from pieces so that this file does not match its own pattern.
_S = "sp" + "ec"
INTERNAL_REFERENCE = re.compile(
    "|".join([
        rf"shared/{_S}s",                                  # shared/<notes>s/padet.md
        rf"\b{_S}s?/[\w.-]+\.md\b",                        # <notes>s/padet.md
        rf"\b{_S}s?\s*§",                                  # <notes> §2.1
        rf"\b{_S}['’]s\b",                                 # the <notes>'s decisions
        rf"\bthe\s+{_S}s?\b",                              # the <notes> (also across lines)
        rf"(?<!\w)\({_S}s?\)",                             # (<notes>), not f(<notes>)
        rf"(?<![\w(.]){_S}s?\)",                           # (paper §3, <notes>)
        rf"\b{_S}s?\s+(?:checks?|decisions?|sections?|examples?)\b",  # <notes> check 9
        rf"^(?:[-*#>]+[ \t]*)?{_S}s?:[ \t]",               # "- <Notes>: ..." line heads
    ]),
    re.IGNORECASE | re.MULTILINE,
)


def _tracked_text_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                             capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for path in out.decode().split("\0"):
        if not path or path == THIS_FILE:
            continue
        if path.endswith(TEXT_SUFFIXES) or os.path.basename(path) in TEXT_NAMES:
            full = os.path.join(REPO, path)
            if os.path.isfile(full):
                yield path, full


def find_internal_references(text):
    """(line number, excerpt) of each line of ``text`` where an internal reference starts."""
    hits = {}
    for m in INTERNAL_REFERENCE.finditer(text):
        line_no = text.count("\n", 0, m.start()) + 1
        if line_no not in hits:
            start = max(m.start() - 40, text.rfind("\n", 0, m.start()) + 1)
            hits[line_no] = " ".join(text[start:m.end() + 40].split())
    return sorted(hits.items())


@pytest.mark.parametrize("text", [
    f"Encoder extras ({_S} §2.1).",
    f"as fixed in `shared/{_S}s/padet.md`",
    f"the {_S}'s checks",
    f"following the\n{_S} and Caffe SSD",
    f"Decisions beyond the {_S}",
    f"a decision of the ({_S})",
    f"(paper §3, {_S})",
    f"{_S.capitalize()} check 9: A (0.9), B (0.8)",
    f"defaults ({_S} Decisions)",
    f"- {_S.capitalize()}: padet.md, §2.7",
])
def test_pattern_flags_internal_references(text):
    assert find_internal_references(text)


@pytest.mark.parametrize("text", [
    "inspect.signature(f)",
    "ShapeSpec(channels=3)",
    "dict[str, ShapeSpec])",
    "a specific setting; spectral norm; specified; respectively",
    f"{_S} = importlib.util.{_S}_from_file_location(name, path)",
    f"module = importlib.util.module_from_{_S}({_S})",
    f"{_S}.loader.exec_module(module)",
    f"def test_as_in_{_S}():",
    "aspect ratios (paper §3.1)",
])
def test_pattern_spares_ordinary_words_and_code(text):
    assert not find_internal_references(text)


def test_no_tracked_file_refers_to_internal_notes():
    hits = []
    for path, full in _tracked_text_files():
        try:
            with open(full, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError:
            continue
        hits += [f"{path}:{n}: {line}" for n, line in find_internal_references(text)]
    assert not hits, (
        "cite the paper, the authors' code or docs/ instead of internal notes:\n"
        + "\n".join(hits))
