"""The layout's rules (docs/architecture.md): shared infrastructure imports no method, method
packages hold no programs, and each method's config function adds what its components read."""
import ast
import glob
import os
import subprocess
import sys

import pytest

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from tests.conftest import REPO, config_path

METHOD_PACKAGES = ("iou_uniform", "rga_prm", "padet", "projects")


def test_infrastructure_imports_no_method_package():
    modules = ("d2ext, d2ext.ablation, d2ext.analysis, d2ext.benchmark, d2ext.checkpoint, "
               "d2ext.collapse_check, d2ext.tooling, d2ext.visualization, "
               "d2ext.datasets.shapes, d2ext.datasets.primitives")
    code = (f"import sys, {modules}\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(METHOD_PACKAGES)}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def _method_modules():
    for package in METHOD_PACKAGES:
        yield from glob.glob(os.path.join(REPO, package, "**", "*.py"), recursive=True)


@pytest.mark.parametrize("path", sorted(_method_modules()), ids=lambda p: os.path.relpath(p, REPO))
def test_method_modules_are_library_code(path):
    """No argparse and no ``__main__`` block: programs live in tools/."""
    tree = ast.parse(open(path).read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in getattr(node, "names", [])}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert "argparse" not in imported
    assert "__main__" not in open(path).read()


def _cfg_with(add_config, config_file):
    cfg = get_cfg()
    add_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def test_each_method_config_adds_what_it_builds_on():
    """PRM on IoU-uniform R-CNN reads MODEL.IOU_UNIFORM; PADet reads MODEL.IOU_BALANCED: each
    package's config function alone is enough to build its models."""
    from padet import add_padet_config
    from rga_prm import add_rga_prm_config

    cfg = _cfg_with(add_rga_prm_config, config_path("shapes", "iou_uniform_rga_prm_R_18_FPN.yaml"))
    assert "IOU_UNIFORM" in cfg.MODEL and "PADET" not in cfg.MODEL
    build_model(cfg)
    padet_configs = glob.glob(config_path("shapes", "padet*.yaml"))
    cfg = _cfg_with(add_padet_config, padet_configs[0])
    cfg.MODEL.PADET.IOU_BALANCED = True
    assert "IOU_BALANCED" in cfg.MODEL and "IOU_UNIFORM" not in cfg.MODEL
    build_model(cfg)
