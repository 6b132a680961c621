"""Every shipped config parses with all method nodes applied and builds its model on CPU."""
import glob
import os

import pytest
import torch

from d2ext.collapse_check import watched_losses
from train_net import load_config
from detectron2.modeling import build_model
from tests.conftest import REPO
from tests.model_checks import assert_trains_and_infers, build_model_from_config

CONFIGS = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
)


def test_configs_found():
    assert "configs/shapes/faster_rcnn_R_18_FPN.yaml" in CONFIGS
    assert "configs/primitives/faster_rcnn_R_18_FPN.yaml" in CONFIGS
    assert "configs/Base-RCNN-FPN.yaml" in CONFIGS


@pytest.mark.parametrize("config", CONFIGS)
def test_config_parses_and_builds(config):
    cfg = load_config(os.path.join(REPO, config), ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
    if "/shapes/" in config or "/primitives/" in config:
        assert cfg.OUTPUT_DIR.startswith("output/"), "each leaf config has its own OUTPUT_DIR"
        assert cfg.MODEL.WEIGHTS == "", "CPU configs train from scratch"


LEAF_CONFIGS = [c for c in CONFIGS if not os.path.basename(c).startswith("Base-")]


@pytest.mark.parametrize("config", LEAF_CONFIGS)
def test_config_trains_and_infers_on_odd_sizes(config):
    """A training step on odd sizes, empty GT, half-empty batch; eval. The collapse check, on
    by default, finds the loss it watches among the model's (else training would stop at its
    first iteration)."""
    cfg, model = build_model_from_config(os.path.join(REPO, config))
    losses = assert_trains_and_infers(cfg, model)
    if cfg.COLLAPSE_CHECK.ENABLED:
        assert watched_losses(cfg.COLLAPSE_CHECK.LOSS, losses)


def test_method_nodes_exist():
    cfg = load_config(os.path.join(REPO, "configs/shapes/faster_rcnn_R_18_FPN.yaml"))
    for node in ["IOU_UNIFORM", "RGA", "PRM", "PADET", "IOU_BALANCED"]:
        assert node in cfg.MODEL


def test_unknown_key_and_missing_file_fail_clearly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  NOT_A_KEY: 1\n")
    with pytest.raises(KeyError, match="NOT_A_KEY"):
        load_config(str(bad))
    with pytest.raises(FileNotFoundError, match="no_such.yaml"):
        load_config(str(tmp_path / "no_such.yaml"))


def test_device_falls_back_to_cpu_without_cuda():
    cfg_file = os.path.join(REPO, "configs/shapes/faster_rcnn_R_18_FPN.yaml")
    cfg = load_config(cfg_file, ["MODEL.DEVICE", "cuda"])
    assert cfg.MODEL.DEVICE == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("key", ["ROI_HEADS", "RETINANET", "PADET"])
def test_zero_classes_is_refused_when_the_config_is_loaded(key):
    """detectron2's heads would build and train on background alone (d2ext.config)."""
    cfg_file = os.path.join(REPO, "configs/shapes/faster_rcnn_R_18_FPN.yaml")
    with pytest.raises(ValueError, match=f"MODEL.{key}.NUM_CLASSES = 0"):
        load_config(cfg_file, [f"MODEL.{key}.NUM_CLASSES", "0"])
