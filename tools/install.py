"""The install step behind ``make install``; run it with the target environment's python.

1. Install the pinned requirements (requirements.txt). When the environment already has
   a detectron2 of its own (a user's upstream build), its torch is kept: that detectron2's
   compiled ops are built against it.
2. If no detectron2 is importable, provision detectron2 0.6 from the ``pb1-detectron2==0.6``
   source distribution on PyPI: download it with pip, stage its ``detectron2`` package
   (with ``model_zoo/configs``) plus the ``_C`` placeholder of tools/detectron2_dist, and
   install that as the distribution ``detectron2``.
3. Install this project in editable mode.

Every step is idempotent: running it again changes nothing.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIST_FILES = os.path.join(REPO, "tools", "detectron2_dist")
SDIST = "pb1-detectron2==0.6"
TORCH_PACKAGES = ("torch", "torchvision")


def _pip(*args):
    subprocess.check_call([sys.executable, "-m", "pip", *args])


def _runs(code):
    """Whether ``code`` runs without error in a fresh interpreter of this environment."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def _users_own_detectron2():
    """An importable detectron2 that this script did not provision (its ``_C`` is real)."""
    return _runs(
        "import detectron2, detectron2._C as C; "
        "raise SystemExit(getattr(C, 'HAS_COMPILED_OPS', True) is False)"
    )


def _requirements(keep_torch):
    with open(os.path.join(REPO, "requirements.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    reqs = [line for line in lines if line]
    if keep_torch:
        reqs = [r for r in reqs if not r.split("=")[0].split("<")[0].strip() in TORCH_PACKAGES]
    return reqs


def provision_detectron2(workdir):
    """Install detectron2 0.6's Python code from the pb1-detectron2 sdist (no C++ sources)."""
    # --no-build-isolation: the sdist's setup.py imports torch to prepare its metadata.
    _pip("download", "--no-deps", "--no-build-isolation", "--dest", workdir, SDIST)
    (archive,) = glob.glob(os.path.join(workdir, "pb1*detectron2-0.6.tar.gz"))
    with tarfile.open(archive) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(workdir, **safe)
    src = os.path.join(workdir, "pb1-detectron2-0.6")
    if not os.path.isdir(os.path.join(src, "detectron2", "model_zoo", "configs")):
        raise RuntimeError(f"{archive} has no detectron2/model_zoo/configs; not the expected sdist")
    stage = os.path.join(workdir, "stage")
    shutil.copytree(os.path.join(src, "detectron2"), os.path.join(stage, "detectron2"))
    shutil.copy(os.path.join(src, "LICENSE"), stage)
    shutil.copy(os.path.join(DIST_FILES, "setup.py"), stage)
    shutil.copy(os.path.join(DIST_FILES, "_C.py"), os.path.join(stage, "detectron2", "_C.py"))
    _pip("install", "--no-deps", "--no-build-isolation", stage)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    users_own = _users_own_detectron2()
    if users_own:
        print("install: keeping the environment's own detectron2 and the torch it is built for")
    _pip("install", *_requirements(keep_torch=users_own))
    if not _runs("import detectron2"):
        with tempfile.TemporaryDirectory(prefix="detectron2-sdist-") as workdir:
            provision_detectron2(workdir)
    _pip("install", "--no-deps", "--no-build-isolation", "-e", REPO)
    packages = "detectron2, d2ext, iou_uniform, rga_prm, padet, projects.iou_balanced"
    subprocess.check_call([sys.executable, "-c", f"import {packages}"])


if __name__ == "__main__":
    main()
