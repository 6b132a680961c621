"""tools/diagnose_iou_uniform.py: each diagnostic runs on a tiny (untrained) model and writes
PNG + JSON."""
import json

import pytest

from detectron2.checkpoint import DetectionCheckpointer
from tests.conftest import TINY_TRAIN, TINY_VAL, config_path, load_tool
from tests.model_checks import build_model_from_config

CFG = config_path("shapes", "iou_uniform_R_18_FPN.yaml")
BASELINE = config_path("shapes", "faster_rcnn_R_18_FPN.yaml")
DATA = ["DATASETS.TRAIN", f"('{TINY_TRAIN}',)", "DATASETS.TEST", f"('{TINY_VAL}',)",
        "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("diag")
    paths = {}
    for name, cfg_file in (("iou_uniform", CFG), ("baseline", BASELINE)):
        _, model = build_model_from_config(cfg_file)
        DetectionCheckpointer(model, save_dir=str(out)).save(name)
        paths[name] = str(out / f"{name}.pth")
    return paths


def run(name, cfg_file, weights_file, out):
    return load_tool("diagnose_iou_uniform").main([
        name, "--config-file", cfg_file, "--num-images", "2", "--output-dir", str(out), *DATA,
        "MODEL.WEIGHTS", weights_file])


def read(out, name):
    assert (out / f"{name}.png").stat().st_size > 0
    return json.loads((out / f"{name}.json").read_text())


def test_iou_hist(tiny_shapes, weights, tmp_path):
    numbers = run("iou_hist", CFG, weights["iou_uniform"], tmp_path)
    assert read(tmp_path, "iou_hist") == numbers
    gen = numbers["generated"]
    assert gen["count"] == sum(gen["hist"]) > 0 and gen["mean_iou"] > 0.5
    assert numbers["rpn_positives"]["count"] == sum(numbers["rpn_positives"]["hist"])


@pytest.mark.parametrize("model", ["iou_uniform", "baseline"])
def test_loc_gain(tiny_shapes, weights, tmp_path, model):
    numbers = run("loc_gain", CFG if model == "iou_uniform" else BASELINE, weights[model],
                  tmp_path)
    assert read(tmp_path, "loc_gain") == numbers
    assert len(numbers["bins"]) == 10 and sum(b["count"] for b in numbers["bins"]) > 0
    for b in numbers["bins"]:
        if b["count"]:
            assert b["interval"][0] < b["mean_input_iou"] <= b["interval"][1]
            assert b["gain"] == pytest.approx(b["mean_output_iou"] - b["mean_input_iou"], abs=1e-6)


def test_iou_pred(tiny_shapes, weights, tmp_path):
    numbers = run("iou_pred", CFG, weights["iou_uniform"], tmp_path)
    assert read(tmp_path, "iou_pred") == numbers
    on, off = numbers["efo_on"], numbers["efo_off"]
    assert on["detections"] > 0 and off["detections"] > 0
    with pytest.raises(ValueError, match="IoUUniformROIHeads"):
        run("iou_pred", BASELINE, weights["baseline"], tmp_path)
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS"):
        run("iou_pred", CFG, str(tmp_path / "none.pth"), tmp_path)
