"""tools/visualize.py (detections beside the ground truth) and tools/plot_curves.py (training
curves), on a model trained a few iterations on the tiny shapes splits (d2ext/visualization.py)."""
import json
import os
import re

import pytest
import torch
from PIL import Image

from d2ext.tooling import build_model_with_weights
from d2ext.visualization import MIN_PANEL_SIDE
from detectron2.data import DatasetCatalog
from padet.meta_arch import PADet
from tests.conftest import TINY_VAL, config_path, load_tool, run_train_net
from train_net import load_config

visualize = load_tool("visualize").main
plot_curves = load_tool("plot_curves").main

FASTER_RCNN = config_path("shapes", "faster_rcnn_R_18_FPN.yaml")
FEW_ITERS = ["SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
             "SOLVER.STEPS", "(2,)", "SOLVER.CHECKPOINT_PERIOD", "100"]
# the tiny validation split on CPU; 10 detections per image to draw (fewer labels, faster)
ON_TINY_VAL = ["DATASETS.TEST", f"('{TINY_VAL}',)", "DATALOADER.NUM_WORKERS", "0",
               "MODEL.DEVICE", "cpu", "TEST.DETECTIONS_PER_IMAGE", "10"]


@pytest.fixture(scope="module")
def trained_run(tiny_shapes, tmp_path_factory):
    """A Faster R-CNN run of 3 iterations, evaluated: model_final.pth and metrics.json."""
    out = tmp_path_factory.mktemp("visualize") / "run"
    run_train_net(FASTER_RCNN, out, *FEW_ITERS, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    return out


def _visualize(config, weights, *args, opts=()):
    return visualize(["--config-file", config, *args, "MODEL.WEIGHTS", str(weights),
                      *ON_TINY_VAL, *opts])


def _gt_counts(num_images):
    return {d["image_id"]: len(d["annotations"]) for d in DatasetCatalog.get(TINY_VAL)[:num_images]}


def _expected_grid_size(num_images):
    """(width, height) of the grid: rows of two panels whose shorter side is at least
    MIN_PANEL_SIDE, stacked, each under a title of ~30 px."""
    width, height = 0, 0
    for d in DatasetCatalog.get(TINY_VAL)[:num_images]:
        scale = max(1.0, MIN_PANEL_SIDE / min(d["height"], d["width"]))
        width = max(width, 2 * d["width"] * scale)
        height += d["height"] * scale + 30
    return width, height


def test_detection_grid_has_one_row_per_image_gt_beside_predictions(trained_run, tmp_path):
    for n in (2, 4):
        png, numbers = _visualize(FASTER_RCNN, trained_run / "model_final.pth",
                                  "--num-images", str(n), "--score-thresh", "0.0",
                                  "--output-dir", str(tmp_path / str(n)),
                                  opts=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
        assert png == str(tmp_path / str(n) / "detections.png")
        with Image.open(png) as image:
            size = image.size
            image.verify()
        assert size == pytest.approx(_expected_grid_size(n), rel=0.05)
        written = json.loads((tmp_path / str(n) / "detections.json").read_text())
        assert written == numbers and written["dataset"] == TINY_VAL
        assert {r["image_id"]: r["num_gt"] for r in written["images"]} == _gt_counts(n)
        assert sum(r["num_predicted"] for r in written["images"]) > 0


def test_score_threshold_filters_predictions_and_output_dir_defaults(trained_run, tmp_path):
    opts = ["OUTPUT_DIR", str(tmp_path), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    args = ("--num-images", "2")
    _, everything = _visualize(FASTER_RCNN, trained_run / "model_final.pth", *args,
                               "--score-thresh", "0.0", opts=opts)
    png, nothing = _visualize(FASTER_RCNN, trained_run / "model_final.pth", *args,
                              "--score-thresh", "1.01", opts=opts)
    assert png == str(tmp_path / "visualize" / "detections.png") and os.path.isfile(png)
    assert [r["num_predicted"] for r in nothing["images"]] == [0, 0]
    assert [r["num_gt"] for r in nothing["images"]] == [r["num_gt"] for r in everything["images"]]


def test_padet_detections_through_its_square_test_mapper(tiny_shapes, tmp_path, monkeypatch):
    """An untrained PADet (weights saved without training): the model sees the images warped
    square by PADet's test mapper, and the predictions are drawn on the originals."""
    config = config_path("shapes", "padet_vgg16_0.25x_256_flip_2600it.yaml")
    opts = ["MODEL.PADET.INPUT_SIZE", "160", "MODEL.PADET.SCORE_THRESH_TEST", "0.0"]
    model = build_model_with_weights(load_config(config, [*opts, "MODEL.DEVICE", "cpu"]), seed=0)
    weights = tmp_path / "padet.pth"
    torch.save({"model": model.state_dict()}, weights)
    seen, forward = [], PADet.forward

    def recording_forward(self, batch):
        seen.extend(tuple(x["image"].shape) for x in batch)
        return forward(self, batch)

    monkeypatch.setattr(PADet, "forward", recording_forward)
    png, numbers = _visualize(config, weights, "--num-images", "3", "--score-thresh", "0.0",
                              "--output-dir", str(tmp_path / "vis"), opts=opts)
    assert seen == [(3, 160, 160)] * 3
    with Image.open(png) as image:
        assert image.size == pytest.approx(_expected_grid_size(3), rel=0.05)
    assert {r["image_id"]: r["num_gt"] for r in numbers["images"]} == _gt_counts(3)
    assert [r["num_predicted"] for r in numbers["images"]] == [10, 10, 10]


def test_visualize_needs_trained_weights_before_any_work(tiny_shapes, tmp_path):
    out = tmp_path / "vis"
    for weights in ("", str(tmp_path / "missing.pth")):
        with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS"):
            _visualize(FASTER_RCNN, weights, "--output-dir", str(out))
    assert not out.exists()


def test_curves_of_a_run_with_its_final_ap(trained_run, tmp_path):
    png, curves = plot_curves([str(trained_run)])
    assert png == str(trained_run / "curves.png")
    with Image.open(png) as image:
        image.verify()
    assert {"total_loss", "loss_cls", "loss_box_reg"} <= set(curves["series"])
    line = curves["series"]["total_loss"][str(trained_run)]
    assert line["iteration"] == [2]  # 3 iterations, the last one logged
    assert {"bbox/AP", "bbox/AP50", "bbox/AP75"} <= set(curves["final"][str(trained_run)])

    # two runs, chosen keys, another file
    other = tmp_path / "other"
    other.mkdir()
    lines = (trained_run / "metrics.json").read_text().splitlines()
    (other / "metrics.json").write_text("\n".join(lines[:1]) + "\n")  # no evaluation logged
    output = tmp_path / "plots" / "both.png"
    png, curves = plot_curves([str(trained_run), str(other), "--metrics", "total_loss",
                               "--output", str(output)])
    assert png == str(output) and output.is_file() and output.with_suffix(".json").is_file()
    assert list(curves["series"]) == ["total_loss"]
    assert set(curves["series"]["total_loss"]) == {str(trained_run), str(other)}
    assert set(curves["final"]) == {str(trained_run)}


def test_curves_refuse_malformed_or_missing_metrics(trained_run, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    good = (trained_run / "metrics.json").read_text().splitlines()[0]
    (broken / "metrics.json").write_text(good + "\n" + good[: len(good) // 2] + "\n" + good + "\n")
    named = re.escape(f"{broken / 'metrics.json'}, line 2: ")
    with pytest.raises(ValueError, match=named + "not JSON"):
        plot_curves([str(broken)])
    (broken / "metrics.json").write_text(good + "\n[1, 2]\n")
    with pytest.raises(ValueError, match=named + "not a metrics record"):
        plot_curves([str(broken)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{empty}: no metrics.json")):
        plot_curves([str(trained_run), str(empty)])
    with pytest.raises(ValueError, match="loss_nowhere: logged in no metrics.json"):
        plot_curves([str(trained_run), "--metrics", "loss_nowhere"])
