"""Cityscapes boxes: the instance loader on fabricated gtFine files, COCO-style AP.

The loader reads its label table from ``cityscapesscripts``; where the package is not installed
the test provides that table from detectron2's own copy (fabricate.py).
"""
import sys

import numpy as np
import pytest
import torch

from d2ext import COCOEvaluatorWithIoUThresholds, DatasetFilesNotFoundError, build_dataset_evaluator
from train_net import add_all_configs
from d2ext.datasets.cityscapes import load_cityscapes_boxes, register_cityscapes_boxes
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode, Boxes, Instances
from tests.datasets.fabricate import install_cityscapes_labels, write_cityscapes

ROAD, PERSON, CAR, CARAVAN = 7, 24, 26, 29
THING = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]


def _frame(height, width, regions):
    """instanceIds image: road everywhere, then (value, y1, y2, x1, x2) rectangles in order."""
    ids = np.full((height, width), ROAD, dtype=np.uint16)
    for value, y1, y2, x1, x2 in regions:
        ids[y1:y2, x1:x2] = value
    return ids


FRAMES = [
    (19, _frame(64, 128, [(CAR * 1000, 10, 30, 20, 60), (PERSON * 1000 + 1, 5, 55, 70, 80),
                          (PERSON, 40, 60, 90, 120)])),  # last: a "persongroup" crowd region
    (20, _frame(64, 128, [(CAR * 1000 + 1, 0, 64, 0, 128), (CARAVAN * 1000, 2, 12, 2, 12)])),
]


@pytest.fixture
def cityscapes_tiny(tmp_path, monkeypatch):
    install_cityscapes_labels(monkeypatch)
    image_dir, gt_dir = write_cityscapes(str(tmp_path), "val", "aachen", FRAMES)
    return image_dir, gt_dir


def test_loader_gives_pixel_covering_boxes_classes_and_crowds(cityscapes_tiny):
    records = sorted(load_cityscapes_boxes(*cityscapes_tiny), key=lambda r: r["file_name"])
    assert [(r["height"], r["width"]) for r in records] == [(64, 128), (64, 128)]
    first = {(THING[a["category_id"]], a["iscrowd"]): a for a in records[0]["annotations"]}
    assert set(first) == {("car", 0), ("person", 0), ("person", 1)}
    assert all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in first.values())
    assert first[("car", 0)]["bbox"] == [20, 10, 40, 20]  # x, y, w, h of the pixels
    assert first[("person", 0)]["bbox"] == [70, 5, 10, 50]
    assert first[("person", 1)]["bbox"] == [90, 40, 30, 20]
    # caravan is excluded from evaluation by Cityscapes; the full-image car is kept
    assert [(THING[a["category_id"]], a["bbox"]) for a in records[1]["annotations"]] == [
        ("car", [0, 0, 128, 64])]


def test_boxes_are_scored_with_coco_ap(cityscapes_tiny, tmp_path):
    name = "cityscapes_tiny_boxes"
    if name not in DatasetCatalog.list():
        register_cityscapes_boxes(name, *cityscapes_tiny)
    assert MetadataCatalog.get(name).evaluator_type == "cityscapes_boxes"
    evaluator = build_dataset_evaluator(add_all_configs(get_cfg()), name, str(tmp_path))
    assert isinstance(evaluator, COCOEvaluatorWithIoUThresholds)
    evaluator._distributed = False
    evaluator.reset()
    predictions = {  # exact boxes, plus one on the crowd region (ignored, not a FP)
        0: [((20, 10, 60, 30), "car"), ((70, 5, 80, 55), "person"), ((92, 42, 118, 58), "person")],
        1: [((0, 0, 128, 64), "car")],
    }
    records = sorted(DatasetCatalog.get(name), key=lambda r: r["file_name"])
    for k, record in enumerate(records):
        inst = Instances((record["height"], record["width"]))
        inst.pred_boxes = Boxes(torch.tensor([p[0] for p in predictions[k]], dtype=torch.float32))
        inst.scores = torch.full((len(predictions[k]),), 0.9)
        inst.pred_classes = torch.tensor([THING.index(p[1]) for p in predictions[k]])
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": inst}])
    res = evaluator.evaluate()["bbox"]
    assert res["AP"] == pytest.approx(100) and res["AP95"] == pytest.approx(100)


def test_missing_directories_fail_clearly(tmp_path):
    with pytest.raises(DatasetFilesNotFoundError, match="leftImg8bit/val") as e:
        load_cityscapes_boxes(str(tmp_path / "leftImg8bit/val"), str(tmp_path / "gtFine/val"))
    assert "_gtFine_{instanceIds,labelIds}.png" in str(e.value)
    for name in ("cityscapes_fine_detection_train", "cityscapes_fine_detection_val"):
        assert MetadataCatalog.get(name).thing_classes == THING


def test_missing_cityscapesscripts_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cityscapesscripts", None)
    image_dir, gt_dir = write_cityscapes(str(tmp_path), "val", "aachen", FRAMES[:1])
    with pytest.raises(ImportError, match="pip install cityscapesscripts"):
        load_cityscapes_boxes(image_dir, gt_dir)
