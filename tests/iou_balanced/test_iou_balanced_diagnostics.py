"""The Fig. 3 diagnostics: binning on hand-built numbers, and each command end to end."""
import json

import numpy as np
import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from projects.iou_balanced import analysis
from tests.conftest import TINY_VAL, load_tool
from tests.model_checks import build_model_from_config
from tests.iou_balanced.test_iou_balanced_detectors import FRCNN_CFG


def test_score_by_iou_bins_and_share():
    scores = np.array([0.9, 0.8, 0.3, 0.5, 0.7, 0.2])
    ious = np.array([0.96, 1.0, 0.52, 0.54, 0.75, 0.1])
    rows = analysis.score_by_iou(scores, ious)
    assert len(rows) == 10 and rows[0]["iou_lo"] == 0.5 and rows[-1]["iou_hi"] == 1.0
    assert rows[0]["count"] == 2 and rows[0]["mean_score"] == pytest.approx(0.4)
    assert rows[-1]["count"] == 2 and rows[-1]["mean_score"] == pytest.approx(0.85)  # 1.0 in
    assert rows[5]["count"] == 1 and rows[5]["mean_score"] == pytest.approx(0.7)
    assert rows[3]["count"] == 0 and rows[3]["mean_score"] is None
    share = analysis.iou_share(ious)
    assert [r["threshold"] for r in share][:2] == [0.5, 0.55]
    assert share[0]["percent"] == pytest.approx(100 * 5 / 6)  # IoU > 0.5
    assert share[1]["percent"] == pytest.approx(100 * 3 / 6)  # IoU > 0.55
    assert share[-1]["percent"] == pytest.approx(100 * 2 / 6)  # IoU > 0.95


@pytest.mark.parametrize("name", ["score_by_iou", "iou_share"])
def test_diagnostic_command_writes_png_and_numbers(tiny_shapes, tmp_path, name):
    weights = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        _, model = build_model_from_config(FRCNN_CFG)
        DetectionCheckpointer(model, save_dir=str(tmp_path)).save(f"w{seed}")
        weights.append(str(tmp_path / f"w{seed}.pth"))
    out = tmp_path / "diag"
    report = load_tool("diagnose_iou_balanced").main([
        name, "--config-file", FRCNN_CFG, "--baseline-weights", weights[0],
        "--balanced-weights", weights[1], "--dataset", TINY_VAL, "--num-images", "2",
        "--output-dir", str(out), "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    ])
    assert (out / f"{name}.png").stat().st_size > 1000
    assert json.loads((out / f"{name}.json").read_text()) == report
    assert all(n > 0 for n in report["num_detections"].values())
    for rows in report["results"].values():
        if name == "iou_share":
            percents = [r["percent"] for r in rows]
            assert percents == sorted(percents, reverse=True)
        else:
            assert sum(r["count"] for r in rows) <= max(report["num_detections"].values())
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_tool("diagnose_iou_balanced").main([
            name, "--config-file", FRCNN_CFG, "--baseline-weights", str(tmp_path / "missing.pth"),
            "--balanced-weights", weights[1]])
