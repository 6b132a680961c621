"""The three diagnostics commands write a PNG and their numbers (Fig. 1a, Fig. 3, Fig. 6)."""
import json

import pytest

from detectron2.checkpoint import DetectionCheckpointer
from rga_prm import analysis
from tests.conftest import TINY_VAL, config_path, load_tool
from tests.model_checks import build_model_from_config

diagnose = load_tool("diagnose_rga_prm").main


def _write_metrics(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _standard_run(tmp_path, name, fg_acc):
    # detectron2's own heads: no bg accuracy logged -> derived from accuracy and counts
    rows = [{"iteration": i, "fast_rcnn/cls_accuracy": 0.9, "fast_rcnn/fg_cls_accuracy": fg_acc,
             "roi_head/num_fg_samples": 10.0, "roi_head/num_bg_samples": 90.0} for i in (19, 39)]
    return _write_metrics(tmp_path / name / "metrics.json",
                          rows + [{"iteration": 40, "bbox/AP": 1}])


def test_positives_and_accuracy(tmp_path):
    base = _standard_run(tmp_path, "base", 0.45)
    prm = _write_metrics(tmp_path / "prm" / "metrics.json", [
        {"iteration": i, "roi_head/num_fg_samples_m0": 5.0 + i, "roi_head/num_fg_samples_m1": 3.0,
         "m0/fast_rcnn/fg_cls_accuracy": 0.5, "m0/fast_rcnn/bg_cls_accuracy": 0.97,
         "m1/fast_rcnn/fg_cls_accuracy": 0.2, "m1/fast_rcnn/bg_cls_accuracy": 0.99}
        for i in (19, 39)])
    out = tmp_path / "diag"
    png, js = diagnose(["positives", "--metrics", base, prm, "--labels", "base", "prm",
                        "--output-dir", str(out)])
    numbers = json.load(open(js))
    assert numbers["last_logged"] == {"base: roi_head/num_fg_samples": 10.0,
                                      "prm: roi_head/num_fg_samples_m0": 44.0,
                                      "prm: roi_head/num_fg_samples_m1": 3.0}
    assert open(png, "rb").read(4) == b"\x89PNG"

    png, js = diagnose(["accuracy", "--metrics", base, prm, "--labels", "base", "rga",
                        "--module", "1", "--output-dir", str(out)])
    numbers = json.load(open(js))
    # (0.9 * 100 - 0.45 * 10) / 90 = 0.95
    assert numbers["mean_negative_accuracy"]["base"] == pytest.approx(0.95)
    assert numbers["mean_positive_accuracy"] == {"base": 0.45, "rga": 0.2}
    assert numbers["mean_negative_accuracy"]["rga"] == 0.99
    assert "derived" in numbers["negative_accuracy_source"]["base"]
    assert open(png, "rb").read(4) == b"\x89PNG"
    with pytest.raises(ValueError, match="one label per"):
        analysis.accuracy([base, prm], labels=["only_one"])


def _checkpoint(config, tmp_path):
    """A seeded untrained model of ``config`` saved as a checkpoint (the command needs one)."""
    _, model = build_model_from_config(config)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    return str(tmp_path / "model.pth")


def test_scores_on_a_tiny_prm_model(tiny_shapes, tmp_path):
    prm_config = config_path("shapes", "rga_prm_R_18_FPN.yaml")
    png, js = diagnose([
        "scores", "--config-file", prm_config, "--num-images", "2", "--output-dir", str(tmp_path),
        "MODEL.WEIGHTS", _checkpoint(prm_config, tmp_path), "MODEL.DEVICE", "cpu",
        "DATASETS.TEST", f"('{TINY_VAL}',)", "DATALOADER.NUM_WORKERS", "0",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])  # untrained: keep every detection
    numbers = json.load(open(js))
    assert numbers["num_detections"] > 0 and numbers["positive_fractions"] == [0.5, 0.1]
    assert 0.0 <= numbers["fraction_abs_diff_gt_0.1"] <= 1.0
    assert all(0.0 <= s <= 1.0 for s in numbers["mean_score"])
    assert open(png, "rb").read(4) == b"\x89PNG"
    rga_config = config_path("shapes", "rga_R_18_FPN.yaml")
    rga_weights = _checkpoint(rga_config, tmp_path)
    with pytest.raises(ValueError, match="ParallelROIHeads"):
        diagnose(["scores", "--config-file", rga_config, "--output-dir", str(tmp_path),
                  "MODEL.WEIGHTS", rga_weights, "MODEL.DEVICE", "cpu",
                  "DATASETS.TEST", f"('{TINY_VAL}',)", "DATALOADER.NUM_WORKERS", "0"])
