"""PADet's config (padet/config.py): where its keys live, and MODEL.PADET.INPUT_SIZE as the one
input size (valid sizes; detectron2's INPUT.MIN_SIZE_*/MAX_SIZE_* may not contradict it)."""
import glob
import os
import re

import pytest
import torch

from train_net import load_config
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from padet.config import (
    INPUT_SIZE_KEYS, PADET_MIN_INPUT_SIZE, PADET_SIZE_DIVISIBILITY, check_padet_input_size,
)
from padet.dataset_mapper import PADetDatasetMapper
from tests.conftest import REPO, config_path

SHAPES = config_path("shapes", "padet_vgg16_0.25x_256_flip_2600it.yaml")  # MODEL.PADET.INPUT_SIZE 256
PADET_CONFIGS = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "configs", "padet", "*.yaml")) + [SHAPES]
)
AUG_KEYS = ["AUG_STYLE", "PHOTOMETRIC", "EXPAND_MAX_RATIO", "CROP_MIN_IOUS", "MIN_BOX_SIZE"]


def _shapes_cfg(*opts):
    return load_config(SHAPES, ["MODEL.DEVICE", "cpu", *opts])


def test_keys_live_in_their_nodes():
    cfg = _shapes_cfg()
    assert sorted(cfg.INPUT.PADET) == sorted(AUG_KEYS)
    assert not set(AUG_KEYS) & set(cfg.MODEL.PADET)
    assert "DETECTIONS_PER_IMAGE" not in cfg.MODEL.PADET
    # set by the shapes config: flip only (docs/padet.md#configs)
    node = cfg.INPUT.PADET
    assert (node.PHOTOMETRIC, node.EXPAND_MAX_RATIO, list(node.CROP_MIN_IOUS)) == (False, 1.0, [])


@pytest.mark.parametrize("config", PADET_CONFIGS)
def test_padet_configs_set_only_input_size(config):
    """Every PADet config keeps detectron2's resize keys and keeps the paper's top 300."""
    cfg = load_config(os.path.join(REPO, config), ["MODEL.DEVICE", "cpu"])
    defaults = get_cfg()
    for key in INPUT_SIZE_KEYS:
        assert cfg.INPUT[key] == defaults.INPUT[key], key
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 300
    check_padet_input_size(cfg)


@pytest.mark.parametrize("key, value", [
    ("MIN_SIZE_TRAIN", "(300,)"), ("MAX_SIZE_TRAIN", "300"),
    ("MIN_SIZE_TEST", "300"), ("MAX_SIZE_TEST", "300"),
])
def test_contradicting_input_size_is_refused_at_build_time(key, value):
    cfg = _shapes_cfg(f"INPUT.{key}", value)
    message = re.escape(f"INPUT.{key} = {value} contradicts MODEL.PADET.INPUT_SIZE = 256")
    with pytest.raises(ValueError, match=message):
        check_padet_input_size(cfg)
    with pytest.raises(ValueError, match=message):
        build_model(cfg)
    for is_train in (True, False):
        with pytest.raises(ValueError, match=message):
            PADetDatasetMapper(cfg, is_train)


def test_multi_scale_min_size_train_is_refused():
    with pytest.raises(ValueError, match=re.escape("INPUT.MIN_SIZE_TRAIN = (256, 288)")):
        check_padet_input_size(_shapes_cfg("INPUT.MIN_SIZE_TRAIN", "(256, 288)"))


def test_default_and_matching_input_sizes_pass():
    check_padet_input_size(_shapes_cfg())  # detectron2's defaults (800, 1333), not 256
    matching = _shapes_cfg("INPUT.MIN_SIZE_TRAIN", "(256,)", "INPUT.MAX_SIZE_TRAIN", "256",
                           "INPUT.MIN_SIZE_TEST", "256", "INPUT.MAX_SIZE_TEST", "256")
    check_padet_input_size(matching)
    for is_train in (True, False):
        assert PADetDatasetMapper(matching, is_train).input_size == 256


@pytest.mark.parametrize("size", [0, 16, 32, 128, 200])
def test_invalid_input_size_is_refused_before_training(size):
    """Below 160 px D5 and D6 collapse to one 1x1 cell (16 px is even padded to 32); sizes off
    the size divisibility 32 are padded. Refused when the model or mapper is built, before any
    training step."""
    cfg = _shapes_cfg("MODEL.PADET.INPUT_SIZE", str(size))
    message = re.escape(f"MODEL.PADET.INPUT_SIZE = {size}: must be a multiple of 32")
    with pytest.raises(ValueError, match=message):
        build_model(cfg)
    with pytest.raises(ValueError, match=message):
        PADetDatasetMapper(cfg, True)


def test_smallest_input_size_has_six_distinct_levels():
    cfg = _shapes_cfg("MODEL.PADET.INPUT_SIZE", str(PADET_MIN_INPUT_SIZE))
    model = build_model(cfg).eval()
    size = PADET_MIN_INPUT_SIZE
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, size, size))
    sides = [f.shape[-1] for f in features.values()]
    assert sides == [20, 10, 5, 3, 2, 1]
    assert model.backbone.size_divisibility == PADET_SIZE_DIVISIBILITY


@pytest.mark.parametrize("key, value", [
    ("APM_PROMOTE_THRESH", "-0.1"), ("APM_PROMOTE_THRESH", "1.5"), ("THETA", "2.0"),
    ("APM_LOSS_WEIGHT", "-0.25"), ("APM_HNM_RATIO", "-1"), ("DET_HNM_RATIO", "-3"),
])
def test_out_of_range_option_is_refused_when_the_model_is_built(key, value):
    """Thresholds on the APM score lie in [0, 1]; loss weights and mining ratios are >= 0."""
    with pytest.raises(ValueError, match=re.escape(f"MODEL.PADET.{key} = {float(value):g}")):
        build_model(_shapes_cfg(f"MODEL.PADET.{key}", value))


@pytest.mark.parametrize("branch", ["APM_CLS", "APM_REG"])
def test_promotion_threshold_needs_both_apm_branches(branch):
    cfg = _shapes_cfg("MODEL.PADET.APM_PROMOTE_THRESH", "0.5", f"MODEL.PADET.{branch}", "False",
                      "MODEL.PADET.FAM_MODE", "none")
    with pytest.raises(ValueError, match="APM_PROMOTE_THRESH = 0.5 needs both APM branches"):
        build_model(cfg)


@pytest.mark.parametrize("config", sorted(glob.glob(os.path.join(REPO, "configs", "padet", "*.yaml"))))
def test_experiment_options_default_to_the_paper(config):
    """Defaults, and every paper-scale config: every anchor promoted, L_apm on the shared
    features with weight 1 (the paper's L = L_apm + L_det)."""
    p = load_config(config, []).MODEL.PADET
    assert (p.APM_PROMOTE_THRESH, p.APM_DETACH, p.APM_LOSS_WEIGHT) == (0.0, False, 1.0)


def test_shapes_config_weights_the_apm_loss_by_a_quarter():
    """The shapes config's one departure from the paper's loss (docs/padet.md#experiments)."""
    p = _shapes_cfg().MODEL.PADET
    assert (p.APM_PROMOTE_THRESH, p.APM_DETACH, p.APM_LOSS_WEIGHT) == (0.0, False, 0.25)
