"""Multi-seed ablations: their definition file, the results file, and the tables made from it.

An ablation set ``NAME`` (one per dataset: ``shapes``, ``primitives``) is an ablation file,
``docs/results/NAME_ablations.yaml``, and a results file, ``docs/results/NAME.json``.
The ablation file names groups of rows; a row is a config
with its ``opts`` (what is trained) and optional ``test_opts`` (test-time settings evaluated on
the same trained model), and compares with a baseline row of its group. Every trained model is
identified by ``(config, opts, seed)``, so rows that share one (a group's baseline, a test-time
variant) share its training run.

The results file is a list of runs, one per group, row and seed::

    {"group", "name", "config", "opts", "test_opts", "seed", "data_version", "commit", "iters",
     "train_s", "metrics": {"AP", "AP50", "AP55", ..., "AP95", "APs", "APm", "APl"}}

with COCO numbers x100, as detectron2 prints them, and ``"same_run_as": "GROUP/ROW"`` when it
was copied from that row's run of the same model and evaluation (:func:`shared_run`).
A run whose ``data_version`` (1 when absent)
is not :data:`DATA_VERSION` was trained before a change that invalidates it: it stays in the
file as history, but tables and comparisons ignore it and the runner trains the row again.
Tables in Markdown files are generated from them between ``<!-- ablation:NAME/GROUP -->`` and
``<!-- /ablation:NAME/GROUP -->`` markers (:func:`render_tables`), so a stale table is detected
by comparing (:func:`stale_tables`).

This module knows no method: rows are configs and options. ``tools/ablate.py`` runs them.
"""
import hashlib
import json
import logging
import math
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from statistics import mean, stdev

import yaml

from .atomic import write_text_atomically

__all__ = ["DATA_VERSION", "METRICS", "TABLE_METRICS", "Row", "AblationError", "load_ablations",
           "run_dir", "eval_dir", "read_results", "write_results", "data_version", "is_current",
           "find_run", "shared_run", "metrics_from_results", "paired_differences", "group_table",
           "render_tables", "stale_tables", "ablation_set_files", "load_ablation_sets",
           "train_net_commands", "run_ablation"]

logger = logging.getLogger(__name__)

# every metric a run records (COCO AP at each IoU threshold, by size), and the table's columns
METRICS = ("AP", "AP50", "AP55", "AP60", "AP65", "AP70", "AP75", "AP80", "AP85", "AP90", "AP95",
           "APs", "APm", "APl")
TABLE_METRICS = ("AP", "AP50", "AP60", "AP70", "AP75", "AP80", "AP90", "APs", "APm")
# Bumped when a code change invalidates the earlier runs (docs/results.md#data-versions):
#   2: the synthetic datasets' GT boxes are floats; before, detectron2 truncated them to whole
#      pixels whenever an image was resized by a non-integer scale (all shapes runs, primitives
#      runs at 128 px)
DATA_VERSION = 2
# a paired difference is called an effect when |mean| exceeds this many standard deviations
EFFECT_STDS = 2.0


class AblationError(ValueError):
    """A malformed ablation or results file; the message names the file and the entry."""


@dataclass(frozen=True)
class Row:
    group: str
    name: str
    config: str
    opts: tuple = ()
    test_opts: tuple = ()
    baseline: str = ""  # the name of the row of the same group it is compared with ("": none)
    label: str = ""  # what the table shows (default: name)

    @property
    def train_key(self):
        """What identifies the trained model (with a seed): rows with equal keys share it."""
        return (self.config, self.opts)


def _opts(value, where):
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) % 2:
        raise AblationError(f"{where}: must be a list of KEY, VALUE pairs, got {value!r}")
    return tuple(str(v) for v in value)


def load_ablations(path, repo_root="."):
    """``(seeds, {group: {"title": str, "rows": [Row, ...]}})`` from an ablation file.

    Raises :class:`AblationError` naming the file and the entry for: a missing ``seeds`` or
    ``groups``, a row without ``name`` or ``config``, a config file that does not exist, odd
    ``opts``, a repeated row name, or a ``baseline`` that names no row of its group.
    """
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise AblationError(f"cannot read the ablation file {path}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("groups"), dict):
        raise AblationError(f"{path}: needs a 'groups' mapping")
    seeds = data.get("seeds")
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and s >= 0
                                                      for s in seeds)):
        raise AblationError(f"{path}: 'seeds' must be a list of integers >= 0, got {seeds!r}")
    groups = {}
    for group, spec in data["groups"].items():
        where = f"{path}: group '{group}'"
        if not isinstance(spec, dict) or not isinstance(spec.get("rows"), list) \
                or not spec["rows"]:
            raise AblationError(f"{where}: needs a non-empty 'rows' list")
        rows = []
        for i, r in enumerate(spec["rows"]):
            if not isinstance(r, dict) or "name" not in r or "config" not in r:
                raise AblationError(f"{where}, row {i}: needs 'name' and 'config'")
            unknown = set(r) - {"name", "config", "opts", "test_opts", "baseline", "label"}
            if unknown:
                raise AblationError(f"{where}, row '{r['name']}': unknown keys {sorted(unknown)}")
            if not os.path.isfile(os.path.join(repo_root, r["config"])):
                raise AblationError(f"{where}, row '{r['name']}': config file not found: "
                                    f"{r['config']}")
            rows.append(Row(group, str(r["name"]), r["config"],
                            _opts(r.get("opts"), f"{where}, row '{r['name']}', opts"),
                            _opts(r.get("test_opts"), f"{where}, row '{r['name']}', test_opts"),
                            str(r.get("baseline", "")), str(r.get("label", ""))))
        names = [r.name for r in rows]
        for r in rows:
            if names.count(r.name) > 1:
                raise AblationError(f"{where}: row name '{r.name}' repeated")
            if r.baseline and r.baseline not in names:
                raise AblationError(f"{where}, row '{r.name}': baseline '{r.baseline}' is no "
                                    "row of the group")
        groups[group] = {"title": str(spec.get("title", group)), "rows": rows}
    return seeds, groups


def _digest(items):
    return hashlib.sha1(json.dumps(list(items)).encode()).hexdigest()[:8]


def run_dir(root, row, seed):
    """The OUTPUT_DIR of a row's training run:
    ``root/v<DATA_VERSION>/<config folder>/<config stem>[-<opts digest>]/seed<N>``, shared by
    every row with the same config and opts (a new data version trains in new folders)."""
    folder, name = os.path.split(row.config)
    stem = os.path.splitext(name)[0] + (f"-{_digest(row.opts)}" if row.opts else "")
    return os.path.join(root, f"v{DATA_VERSION}", os.path.basename(folder), stem, f"seed{seed}")


def eval_dir(root, row, seed):
    """Where a row's test-time variant is evaluated: inside its training run's directory."""
    return os.path.join(run_dir(root, row, seed), f"test-{_digest(row.test_opts)}")


def read_results(path):
    """The runs of a results file ([] when it does not exist yet)."""
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            runs = json.load(f)
    except (OSError, ValueError) as e:
        raise AblationError(f"cannot read the results file {path}: {e}") from e
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise AblationError(f"{path}: must hold a JSON list of runs")
    for i, r in enumerate(runs):
        missing = {"group", "name", "seed", "metrics"} - set(r)
        if missing:
            raise AblationError(f"{path}: run {i} lacks {sorted(missing)}")
    return runs


def write_results(path, runs):
    """Write the runs (sorted by group, name, seed) atomically: a kill leaves the old file."""
    runs = sorted(runs, key=lambda r: (r["group"], r["name"], r["seed"]))
    write_text_atomically(path, json.dumps(runs, indent=1) + "\n")


def data_version(run):
    """The data version a run of a results file was trained at (1 when it does not say)."""
    return run.get("data_version", 1)


def is_current(run):
    """Whether a run of a results file was trained at the current :data:`DATA_VERSION`."""
    return data_version(run) == DATA_VERSION


def find_run(runs, group, name, seed):
    """The current run of a group, row and seed, or None."""
    return next((r for r in runs if is_current(r)
                 and (r["group"], r["name"], r["seed"]) == (group, name, seed)), None)


def shared_run(runs, row, seed):
    """A current run of another group or row that is the same model and evaluation as ``row``
    with ``seed`` (equal config, opts, test_opts and seed), or None: its numbers are this row's
    too, whether or not that training's OUTPUT_DIR is still on this machine."""
    key = (row.config, list(row.opts), list(row.test_opts), seed)
    return next((r for r in runs if is_current(r) and key == (
        r.get("config"), r.get("opts", []), r.get("test_opts", []), r["seed"])), None)


def metrics_from_results(results):
    """The box metrics of one dataset from detectron2's results dict (``{"bbox": {...}}``),
    restricted to :data:`METRICS` (NaN, COCO's "no object of that size", becomes None)."""
    bbox = results.get("bbox")
    if bbox is None:
        raise AblationError(f"the evaluation has no 'bbox' results: {sorted(results)}")
    return {k: (None if math.isnan(bbox[k]) else round(float(bbox[k]), 3))
            for k in METRICS if k in bbox}


def _by_seed(runs, group, name, version=DATA_VERSION):
    return {r["seed"]: r for r in runs
            if data_version(r) == version and r["group"] == group and r["name"] == name}


def paired_differences(runs, group, name, baseline, metric, version=DATA_VERSION):
    """``row - baseline`` of ``metric`` on each seed both have, in seed order, among the runs
    of data version ``version``."""
    a, b = _by_seed(runs, group, name, version), _by_seed(runs, group, baseline, version)
    return [a[s]["metrics"][metric] - b[s]["metrics"][metric] for s in sorted(set(a) & set(b))
            if a[s]["metrics"].get(metric) is not None
            and b[s]["metrics"].get(metric) is not None]


def _mean_std(values, signed=False):
    if not values:
        return "–"
    sign = "+" if signed else ""
    text = f"{mean(values):{sign}.1f}"
    return text + (f" ± {stdev(values):.1f}" if len(values) > 1 else "")


def _is_effect(diffs):
    return len(diffs) >= 3 and abs(mean(diffs)) > EFFECT_STDS * stdev(diffs)


def group_table(group, spec, runs, version=DATA_VERSION):
    """A Markdown table of a group: each row's mean ± std over its seeds, then, for a row with a
    baseline, its paired difference (same seeds) as mean ± std, in bold when |mean| exceeds
    ``EFFECT_STDS`` standard deviations of the differences over at least 3 seeds. Only the runs
    of data version ``version`` count (default: the current one)."""
    head = ["Row", "seeds", *TABLE_METRICS, "train min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in spec["rows"]:
        done = _by_seed(runs, group, row.name, version)
        cells = [row.label or row.name, str(len(done))]
        for m in TABLE_METRICS:
            cells.append(_mean_std([r["metrics"][m] for r in done.values()
                                    if r["metrics"].get(m) is not None]))
        cells.append(_mean_std([r["train_s"] / 60 for r in done.values()
                                if r.get("train_s") is not None]))
        lines.append("| " + " | ".join(cells) + " |")
        if row.baseline:
            base = next(r for r in spec["rows"] if r.name == row.baseline)
            diffs = {m: paired_differences(runs, group, row.name, row.baseline, m, version)
                     for m in TABLE_METRICS}
            n = len(diffs["AP"])
            cells = [f"Δ vs {base.label or base.name}", f"{n} paired"]
            for m in TABLE_METRICS:
                text = _mean_std(diffs[m], signed=True)
                cells.append(f"**{text}**" if _is_effect(diffs[m]) else text)
            lines.append("| " + " | ".join(cells + [""]) + " |")
    return "\n".join(lines)


_MARKER = re.compile(r"(<!-- ablation:(([\w-]+)/([\w-]+)(?:@v(\d+))?) -->\n)(.*?)"
                     r"(<!-- /ablation:\2 -->)", re.S)


def render_tables(text, sets):
    """``text`` with every ``<!-- ablation:SET/GROUP -->`` ... ``<!-- /ablation:SET/GROUP -->``
    block replaced by that group's table (:func:`group_table`); ``SET/GROUP@vN`` tables the
    runs of an earlier data version N. ``sets`` maps each ablation set's name to
    ``(groups, runs, results file)``. Raises for a marker naming no set or group."""
    def replace(match):
        name, group = match.group(3), match.group(4)
        version = int(match.group(5) or DATA_VERSION)
        if name not in sets or group not in sets[name][0]:
            raise AblationError(f"table marker names an unknown ablation group '{name}/{group}'")
        groups, runs, source = sets[name]
        note = (f"<!-- generated by `python tools/ablate.py --write-tables` from {source}: "
                "do not edit -->\n")
        return match.group(1) + note + group_table(group, groups[group], runs, version) + \
            "\n" + match.group(7)
    return _MARKER.sub(replace, text)


def stale_tables(paths, sets):
    """The files among ``paths`` whose generated tables differ from the results
    (``sets`` as in :func:`render_tables`)."""
    stale = []
    for path in paths:
        with open(path) as f:
            text = f.read()
        if render_tables(text, sets) != text:
            stale.append(path)
    return stale


def ablation_set_files(name, results_dir="docs/results"):
    """``(ablation file, results file)`` of the ablation set ``name``:
    ``<results_dir>/<name>_ablations.yaml`` and ``<results_dir>/<name>.json``."""
    return (os.path.join(results_dir, f"{name}_ablations.yaml"),
            os.path.join(results_dir, f"{name}.json"))


def load_ablation_sets(results_dir="docs/results", repo_root="."):
    """``{name: (groups, runs, results file)}`` of every ``<name>_ablations.yaml`` in
    ``results_dir``, for :func:`render_tables`."""
    sets = {}
    for path in sorted(os.listdir(os.path.join(repo_root, results_dir))):
        if path.endswith("_ablations.yaml"):
            name = path[:-len("_ablations.yaml")]
            ablations, results = ablation_set_files(name, results_dir)
            _, groups = load_ablations(os.path.join(repo_root, ablations), repo_root)
            sets[name] = (groups, read_results(os.path.join(repo_root, results)), results)
    return sets


def _results_json(output_dir):
    return os.path.join(output_dir, "inference", "results.json")


def train_net_commands(row, seed, root):
    """``[(output_dir, train_net.py arguments), ...]`` still to run for a row and seed: its
    training (``--resume``, so an interrupted run continues) unless its results exist, then its
    test-time variant (``--eval-only`` on the trained weights) when it has ``test_opts``."""
    train = run_dir(root, row, seed)
    commands = []
    if not os.path.exists(_results_json(train)):
        commands.append((train, ["--config-file", row.config, "--resume", "OUTPUT_DIR", train,
                                 "SEED", str(seed), *row.opts]))
    if row.test_opts:
        test = eval_dir(root, row, seed)
        if not os.path.exists(_results_json(test)):
            commands.append((test, ["--config-file", row.config, "--eval-only",
                                    "MODEL.WEIGHTS", os.path.join(train, "model_final.pth"),
                                    "OUTPUT_DIR", test, "SEED", str(seed),
                                    *row.opts, *row.test_opts]))
    return commands


def run_train_net(argv):
    """Run ``train_net.py`` with ``argv`` in a child process (each run starts clean)."""
    subprocess.run([sys.executable, "train_net.py", *argv], check=True)


def _commit():
    """HEAD's commit, with "+dirty" when tracked code (outside docs/) differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)docs"], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _cpu_model():
    """The CPU's model name (Linux's /proc/cpuinfo), or the architecture where it is unknown:
    two CPU models can round a training differently (docs/training.md#determinism)."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f
                     if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0]} ({platform.machine()})" if names else platform.machine()


def _machine():
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{_cpu_model()} CPU, {torch.get_num_threads()} threads"


def run_ablation(groups, seeds, results_path, root, launch=run_train_net, rows=None):
    """Train and evaluate every (group, row, seed) missing from the results file, one run at a
    time, adding each to the file as it finishes. Rows sharing a trained model (same config,
    opts and seed) train it once; an interrupted run continues from its last checkpoint.
    A row whose run is already in the file under another group or row (:func:`shared_run`)
    is recorded from it, with ``"same_run_as": "GROUP/ROW"``, without training again, unless
    its model is needed here (:func:`_model_needed_here`): rows of a group that share a
    training are then all recorded from the one on this machine, never some from an earlier
    training of theirs and some from this one.
    ``rows``: the names of the rows to run (default: every row); the groups' other rows still
    count as sharing their trainings. Returns the runs of the file.

    A run whose ``train_net.py`` fails (``launch`` raises ``CalledProcessError``, e.g. a
    training stopped by the collapse check) is not recorded and the other runs go on; rows
    sharing its training are not tried again. After the last run, :class:`AblationError` lists
    the failed runs with their logs."""
    runs = read_results(results_path)
    failed, failed_dirs = [], set()
    for group, spec in groups.items():
        for row in spec["rows"]:  # a row's seeds one after the other: comparisons complete early
            if rows is not None and row.name not in rows:
                continue
            for seed in seeds:
                if find_run(runs, group, row.name, seed):
                    continue
                same = None
                if not _model_needed_here(group, spec, row, seed, runs, root):
                    same = shared_run(runs, row, seed)
                if same:
                    runs.append({**same, "group": group, "name": row.name,
                                 "same_run_as": same.get("same_run_as",
                                                         f"{same['group']}/{same['name']}")})
                    write_results(results_path, runs)
                    continue
                train = run_dir(root, row, seed)
                if train in failed_dirs:
                    failed.append(f"{group}/{row.name} seed {seed} (its training failed above)")
                    continue
                if not _launch_runs(row, seed, root, launch):
                    failed_dirs.add(train)
                    failed.append(f"{group}/{row.name} seed {seed} "
                                  f"(log: {os.path.join(train, 'log.txt')})")
                    continue
                runs.append(_recorded_run(group, row, seed, root))
                write_results(results_path, runs)
    if failed:
        raise AblationError(f"{len(failed)} run(s) failed and are not in {results_path}: "
                            + "; ".join(failed))
    return runs


def _model_needed_here(group, spec, row, seed, runs, root):
    """Whether ``row``'s trained model with ``seed`` is, or is about to be, on this machine for
    ``group``: its training has finished under ``root``, or another row of the group sharing
    that training still needs a run that the results file cannot give (a test-time variant to
    evaluate on the weights). Trainings of one config, opts and seed on two machines or
    commits can differ, so a group's rows sharing a training are recorded from the same one."""
    train = run_dir(root, row, seed)
    if os.path.exists(_results_json(train)):
        return True
    return any(other is not row and run_dir(root, other, seed) == train
               and not find_run(runs, group, other.name, seed)
               and not shared_run(runs, other, seed) for other in spec["rows"])


def _launch_runs(row, seed, root, launch):
    """Run the ``train_net.py`` commands of a row and seed still missing; False when one fails
    (its error is in the child's output and its OUTPUT_DIR's log.txt)."""
    train = run_dir(root, row, seed)
    info_path = os.path.join(train, "ablation_run.json")
    for output_dir, argv in train_net_commands(row, seed, root):
        logger.info("ablation %s/%s seed %d: train_net.py %s", row.group, row.name, seed,
                    " ".join(argv))
        resumed = os.path.exists(os.path.join(output_dir, "last_checkpoint"))
        start = time.perf_counter()
        try:
            launch(argv)
        except subprocess.CalledProcessError as e:
            logger.error("ablation %s/%s seed %d: train_net.py failed (exit status %s), see "
                         "%s; going on with the other runs", row.group, row.name, seed,
                         e.returncode, os.path.join(output_dir, "log.txt"))
            return False
        if output_dir == train:
            # a resumed run's time covers its last part only: not recorded
            seconds = None if resumed else round(time.perf_counter() - start, 1)
            info = {"commit": _commit(), "machine": _machine(), "train_s": seconds}
            if resumed:
                info["resumed"] = True
            write_text_atomically(info_path, json.dumps(info, indent=1))
    return True


def _recorded_run(group, row, seed, root):
    """The results-file entry of a row and seed whose runs have finished."""
    train = run_dir(root, row, seed)
    test = eval_dir(root, row, seed) if row.test_opts else train
    with open(_results_json(test)) as f:
        metrics = metrics_from_results(json.load(f))
    info = {"commit": "unknown", "train_s": None}  # trained outside the runner
    info_path = os.path.join(train, "ablation_run.json")
    if os.path.exists(info_path):
        with open(info_path) as f:
            info = json.load(f)
    with open(os.path.join(train, "config.yaml")) as f:
        iters = yaml.safe_load(f)["SOLVER"]["MAX_ITER"]
    return {"group": group, "name": row.name, "config": row.config, "opts": list(row.opts),
            "test_opts": list(row.test_opts), "seed": seed, "data_version": DATA_VERSION, **info,
            "iters": iters,
            "metrics": metrics}
