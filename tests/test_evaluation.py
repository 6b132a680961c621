"""COCO evaluation with AP at each IoU threshold, and the ranking decomposition, checked on
constructed cases."""
import contextlib
import io

import pytest
import torch
from pycocotools.coco import COCO

from d2ext import COCOEvaluatorWithIoUThresholds
from d2ext.datasets.primitives import PRIMITIVES
from d2ext.evaluation.ranking import coco_gt_of, oracle_scored, ranking_decomposition
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances


def _register(name):
    if name in DatasetCatalog.list():
        return
    records = [{
        "file_name": "unused.jpg", "image_id": 1, "height": 100, "width": 100,
        "annotations": [
            {"bbox": [10, 10, 40, 40], "bbox_mode": 0, "category_id": 0, "iscrowd": 0},
            {"bbox": [60, 60, 90, 90], "bbox_mode": 0, "category_id": 1, "iscrowd": 0},
        ],
    }]
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=["a", "b"])


def _evaluate(tmp_path, boxes, classes):
    _register("eval_case")
    evaluator = COCOEvaluatorWithIoUThresholds(
        "eval_case", output_dir=str(tmp_path), distributed=False, use_fast_impl=False
    )
    evaluator.reset()
    inst = Instances((100, 100))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.full((len(boxes),), 0.9)
    inst.pred_classes = torch.tensor(classes)
    evaluator.process([{"image_id": 1}], [{"instances": inst}])
    return evaluator.evaluate()["bbox"]


def test_ap_at_each_threshold_follows_the_localization_quality(tmp_path):
    # class a: IoU = 30*28 / 900 = 0.933 ; class b: IoU = 30*22 / 900 = 0.733
    res = _evaluate(tmp_path, [[10, 10, 40, 38], [60, 60, 90, 82]], [0, 1])
    expected = {50: 100, 55: 100, 60: 100, 65: 100, 70: 100, 75: 50, 80: 50, 85: 50, 90: 50, 95: 0}
    for thr, ap in expected.items():
        assert abs(res[f"AP{thr}"] - ap) < 1e-6, (thr, res[f"AP{thr}"])
    assert abs(res["AP50"] - 100) < 1e-6 and abs(res["AP75"] - 50) < 1e-6
    assert abs(res["AP"] - sum(expected.values()) / 10) < 1e-6


def test_no_predictions_give_nan_thresholds(tmp_path):
    res = _evaluate(tmp_path, [], [])
    assert all(res[f"AP{t}"] != res[f"AP{t}"] for t in range(50, 100, 5))


def test_ranking_decomposition_separates_scores_from_boxes():
    """One GT of class a (XYWH 10, 10, 30, 30) with two detections: an exact box scored 0.1 and
    a box of IoU 0.8 scored 0.9; class b's GT is missed.

    At IoU 0.9 the scores rank the worse box first: precision 1/2 at full recall, AP 50; the
    oracle ranks the exact box first, AP 100; class a's recall is 100 either way. At IoU 0.5 the
    first box is a hit whatever the order. Class b (no detection) adds recall and AP 0 to every
    mean."""
    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "height": 100, "width": 100}],
                  "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
                  "annotations": [
                      {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30],
                       "area": 900, "iscrowd": 0},
                      {"id": 2, "image_id": 1, "category_id": 2, "bbox": [60, 60, 30, 30],
                       "area": 900, "iscrowd": 0}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.1},
            {"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 24], "score": 0.9}]
    assert [d["score"] for d in oracle_scored(gt, dets)] == pytest.approx([1.0, 0.8])
    numbers = ranking_decomposition(gt, dets)
    assert numbers["detections"] == 2
    # means over the two classes, b contributing 0
    assert numbers["AP"]["AP90"] == pytest.approx(25, abs=0.5)
    assert numbers["AP_oracle"]["AP90"] == pytest.approx(50)
    assert numbers["recall"]["AP90"] == pytest.approx(50)
    for key in ("AP", "AP_oracle", "recall"):
        assert numbers[key]["AP50"] == pytest.approx(50)
        assert numbers[key]["AP95"] == pytest.approx(50 if key != "AP" else 25, abs=0.5)
    # no detection at all: zero everywhere, no error
    empty = ranking_decomposition(gt, [])
    assert empty["detections"] == 0 and empty["recall"]["AP50"] == 0 == empty["AP"]["AP50"]


def test_coco_gt_of_a_generated_dataset_never_loaded_before(tmp_path):
    """A generated dataset's json_file does not exist until the dataset is first loaded (a
    fresh checkout): coco_gt_of loads it first, so the ground truth is there."""
    name = f"primitives_coco_gt_{tmp_path.name}"
    PRIMITIVES.register(name, 3, 7, root=str(tmp_path))
    json_file = MetadataCatalog.get(name).json_file
    assert not (tmp_path / f"{name}.json").exists() and json_file == str(tmp_path / f"{name}.json")
    coco = coco_gt_of(name)
    assert (tmp_path / f"{name}.json").exists()
    assert sorted(coco.getImgIds()) == [1, 2, 3]
    assert len(coco.getAnnIds()) == sum(len(r["annotations"]) for r in DatasetCatalog.get(name))
