"""padet.analysis (anchor_balance, box_regression) and tools/diagnose_padet.py: a random model,
the tiny shapes split."""
import json

import pytest
import torch

from train_net import load_config
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from padet.dataset_mapper import PADetDatasetMapper
from d2ext.analysis import pearson_r as _correlation
from detectron2.checkpoint import DetectionCheckpointer
from padet.analysis import anchor_balance, box_regression
from tests.conftest import config_path, load_tool

main = load_tool("diagnose_padet").main
CONFIG = config_path("shapes", "padet_vgg16_0.25x_256.yaml")


def _checkpoint(tmp_path):
    """A seeded untrained model of the shapes PADet config, saved (the command needs one)."""
    model, _, _, _ = _model_and_data(None)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    return str(tmp_path / "model.pth")


def test_anchor_balance_writes_png_and_consistent_json(tiny_shapes, tmp_path):
    out = tmp_path / "diag" / "anchor_balance"
    result = main(["anchor_balance", "--config-file", CONFIG,
                   "--dataset", tiny_shapes[0], "--num-images", "3",
                   "--output-dir", str(tmp_path / "diag"),
                   "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", _checkpoint(tmp_path)])
    assert (tmp_path / "diag" / "anchor_balance.png").stat().st_size > 0
    assert json.load(open(str(out) + ".json")) == result
    b = result["balance"]
    assert result["num_images"] == 3
    # same anchors and matching: the theta rule only removes negatives, never positives
    assert b["initial"]["pos_per_image"] == b["APM_C"]["pos_per_image"] > 0
    assert b["APM_C"]["neg_per_image"] <= b["initial"]["neg_per_image"]
    assert b["APM_CR"]["neg_per_image"] <= b["APM_R"]["neg_per_image"]
    hist = result["positive_iou_histogram_per_image"]
    # every initial positive is binned (>= 0.5) except forced best anchors below 0.5
    assert sum(hist["initial"]) <= b["initial"]["pos_per_image"] + 1e-9


def _model_and_data(tiny_shapes):
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg)
    dicts = DatasetCatalog.get(tiny_shapes[0])[:3] if tiny_shapes else None
    return model, PADetDatasetMapper(cfg, False), dicts, cfg.MODEL.PADET.INPUT_SIZE


def test_box_regression_counts_the_matched_positives(tiny_shapes, tmp_path):
    model, mapper, dicts, size = _model_and_data(tiny_shapes)
    result = box_regression(model, mapper, dicts, size)
    balance = anchor_balance(model, mapper, dicts, size)["balance"]
    assert [r["level"] for r in result["apm"]] == ["d1", "d2", "d3", "d4", "d5", "d6"]
    # the APM regresses the positives of the initial anchors, the detection module those of
    # the promoted anchors: the same matching as the Figure 1 counts
    initial_positives = 3 * balance["initial"]["pos_per_image"]
    assert sum(r["num_positives"] for r in result["apm"]) == initial_positives
    assert sum(r["num_positives"] for r in result["det"]) == 3 * balance["APM_R"]["pos_per_image"]
    for row in result["apm"] + result["det"]:
        assert all(c is None or -1 <= c <= 1 for c in row["correlation"])

    out = tmp_path / "box_regression"
    written = main(["box_regression", "--config-file", CONFIG, "--dataset", tiny_shapes[0],
                    "--num-images", "2", "--output-dir", str(tmp_path), "MODEL.DEVICE", "cpu",
                    "MODEL.WEIGHTS", _checkpoint(tmp_path)])
    assert (tmp_path / "box_regression.png").stat().st_size > 0
    assert json.load(open(str(out) + ".json")) == written


def test_box_regression_measures_the_predicted_deltas(tiny_shapes):
    model, mapper, dicts, size = _model_and_data(tiny_shapes)
    for conv in model.apm.anchor_deltas:  # the APM now predicts zero deltas everywhere
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    for row in box_regression(model, mapper, dicts, size)["apm"]:
        if row["num_positives"]:
            assert row["smooth_l1"] == row["smooth_l1_zero_prediction"]
            assert row["correlation"] == [None] * 4  # a constant prediction has no correlation
    assert _correlation(torch.arange(5.0), 2 * torch.arange(5.0) + 1) == pytest.approx(1.0)
    assert _correlation(torch.arange(5.0), -torch.arange(5.0)) == pytest.approx(-1.0)
