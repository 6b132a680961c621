"""PASCAL VOC splits with COCO-style AP: loader, difficult objects, equality with pycocotools."""
import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from d2ext import COCOEvaluatorWithIoUThresholds, DatasetFilesNotFoundError, build_dataset_evaluator
from train_net import add_all_configs
from d2ext.datasets.voc import VOC_SPLITS, load_voc_coco_style, register_voc_coco_style
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.pascal_voc import CLASS_NAMES
from detectron2.structures import Boxes, Instances
from tests.datasets.fabricate import write_voc

# (class, xmin, ymin, xmax, ymax, difficult) in VOC's 1-based inclusive pixel indices;
# small (< 32^2), medium and large (> 96^2) objects, two difficult ones
VOC07_TEST = [
    ("000001", 150, 200, [("dog", 11, 21, 130, 120, 0), ("cat", 141, 11, 160, 30, 0),
                          ("cat", 171, 101, 190, 140, 1)]),
    ("000002", 120, 160, [("person", 21, 11, 70, 110, 0), ("dog", 81, 41, 130, 90, 0)]),
    ("000003", 160, 160, [("person", 1, 1, 160, 160, 0), ("dog", 40, 40, 55, 52, 1)]),
]
VOC07_TRAINVAL = [("000004", 100, 120, [("car", 5, 5, 60, 50, 0)]),
                  ("000005", 80, 90, [("cow", 2, 3, 50, 60, 0)])]
VOC12_TRAINVAL = [("2008_000001", 90, 110, [("bus", 3, 4, 80, 70, 0), ("car", 1, 1, 9, 9, 1)]),
                  ("2008_000002", 70, 70, [("sheep", 10, 10, 40, 40, 0)])]


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc"))
    write_voc(root, "VOC2007", "test", VOC07_TEST)
    write_voc(root, "VOC2007", "trainval", VOC07_TRAINVAL)
    write_voc(root, "VOC2012", "trainval", VOC12_TRAINVAL)
    for name, parts in [("voc_tiny_2007_test", VOC_SPLITS["voc_2007_test"]),
                        ("voc_tiny_0712_trainval", VOC_SPLITS["voc_0712_trainval"])]:
        register_voc_coco_style(name, parts, root=root)
    return root


def test_registered_names_use_coco_style_evaluation():
    for name in ("voc_0712_trainval", "voc_2007_test", "voc_2012_trainval"):
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "voc_coco_style"
        assert meta.thing_classes == list(CLASS_NAMES)
    assert [s for _, s in VOC_SPLITS["voc_0712_trainval"]] == ["trainval", "trainval"]
    assert MetadataCatalog.get("voc_2007_test").dirname.endswith("VOC2007")


def test_loader_keeps_detectron2_boxes_and_marks_difficult(voc_root):
    records = DatasetCatalog.get("voc_tiny_2007_test")
    assert [r["image_id"] for r in records] == ["000001", "000002", "000003"]
    first = records[0]
    assert (first["height"], first["width"]) == (150, 200)
    assert first["annotations"][0]["bbox"] == [10.0, 20.0, 130.0, 120.0]  # x1 - 1, y1 - 1
    assert [a["iscrowd"] for a in first["annotations"]] == [0, 0, 1]
    assert [a["category_id"] for a in first["annotations"]] == [
        CLASS_NAMES.index(c) for c in ("dog", "cat", "cat")]
    union = DatasetCatalog.get("voc_tiny_0712_trainval")
    assert [r["image_id"] for r in union] == ["000004", "000005", "2008_000001", "2008_000002"]
    assert [a["iscrowd"] for a in union[2]["annotations"]] == [0, 1]


def test_missing_files_name_the_path_and_the_layout(tmp_path):
    with pytest.raises(DatasetFilesNotFoundError, match="VOC2007/ImageSets/Main/test.txt") as e:
        load_voc_coco_style(str(tmp_path / "VOC2007"), "test")
    assert "JPEGImages/<image id>.jpg" in str(e.value)
    register_voc_coco_style("voc_tiny_missing", [("VOC2012", "val")], root=str(tmp_path))
    with pytest.raises(DatasetFilesNotFoundError, match="VOC2012"):
        DatasetCatalog.get("voc_tiny_missing")


# predictions (image, class, XYXY in detectron2 coordinates, score): a mix of exact, loose,
# wrong-class, duplicate and on-difficult boxes
PREDICTIONS = [
    ("000001", "dog", (10, 20, 130, 120), 0.9), ("000001", "dog", (14, 26, 128, 112), 0.6),
    ("000001", "cat", (140, 10, 161, 31), 0.8), ("000001", "cat", (170, 100, 190, 140), 0.95),
    ("000001", "person", (0, 0, 60, 60), 0.4),
    ("000002", "person", (22, 8, 72, 106), 0.85), ("000002", "dog", (85, 44, 126, 95), 0.7),
    ("000002", "dog", (0, 0, 40, 40), 0.75),
    ("000003", "person", (6, 4, 150, 158), 0.5), ("000003", "dog", (39, 39, 55, 52), 0.3),
]


def _pycocotools_stats(records_xml):
    """COCOeval on a COCO json built by hand from the VOC annotations (difficult = crowd)."""
    images, annotations = [], []
    for image_id, height, width, objects in records_xml:
        images.append({"id": image_id, "height": height, "width": width})
        for name, x1, y1, x2, y2, difficult in objects:
            w, h = x2 - x1 + 1, y2 - y1 + 1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": CLASS_NAMES.index(name),
                                "bbox": [x1 - 1, y1 - 1, w, h], "area": w * h,
                                "iscrowd": difficult})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": i, "name": n} for i, n in enumerate(CLASS_NAMES)]}
    results = [{"image_id": i, "category_id": CLASS_NAMES.index(c),
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s}
               for i, c, b, s in PREDICTIONS]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        coco_eval = COCOeval(gt, gt.loadRes(results), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def test_coco_style_numbers_equal_pycocotools(voc_root, tmp_path):
    name = "voc_tiny_2007_test"
    evaluator = build_dataset_evaluator(add_all_configs(get_cfg()), name, str(tmp_path))
    assert isinstance(evaluator, COCOEvaluatorWithIoUThresholds)
    evaluator._distributed = False
    evaluator.reset()
    for record in DatasetCatalog.get(name):
        preds = [p for p in PREDICTIONS if p[0] == record["image_id"]]
        inst = Instances((record["height"], record["width"]))
        inst.pred_boxes = Boxes(torch.tensor([p[2] for p in preds], dtype=torch.float32))
        inst.scores = torch.tensor([p[3] for p in preds])
        inst.pred_classes = torch.tensor([CLASS_NAMES.index(p[1]) for p in preds])
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": inst}])
    res = evaluator.evaluate()["bbox"]

    reference = _pycocotools_stats(VOC07_TEST)
    for key, stat in zip(["AP", "AP50", "AP75", "APs", "APm", "APl"], reference.stats[:6]):
        assert res[key] == pytest.approx(stat * 100, abs=1e-9), key
    precision = reference.eval["precision"][:, :, :, 0, -1]
    for t, thr in enumerate(range(50, 100, 5)):
        p = precision[t]
        assert res[f"AP{thr}"] == pytest.approx(np.mean(p[p > -1]) * 100, abs=1e-9), thr
    # sanity: the case is informative (neither perfect nor empty; thresholds differ)
    assert 0 < res["AP"] < 100 and res["AP50"] > res["AP90"]
