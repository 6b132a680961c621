"""COCO evaluation with AP at each IoU threshold, checked on a constructed case."""
import torch

from d2ext import COCOEvaluatorWithIoUThresholds
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
