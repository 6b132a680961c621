"""CrowdHuman: the .odgt loader and the AP50 / MR^-2 evaluator on fabricated data."""
import math

import pytest
import torch

from d2ext import CrowdHumanEvaluator, DatasetFilesNotFoundError, build_dataset_evaluator
from d2ext.datasets.crowdhuman import load_crowdhuman_odgt, register_crowdhuman
from train_net import add_all_configs
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode, Boxes, Instances
from tests.datasets.fabricate import mask_region, person, write_crowdhuman

# image 1: persons A, B, a "mask" ignore region M and a person flagged extra.ignore;
# image 2: person C; image 3: persons D, E (E reaches past the image: clipped);
# images 4-8: no one (they count in FPPI)
A, B, M, C, D = (10, 10, 40, 90), (60, 10, 40, 90), (110, 5, 60, 100), (20, 20, 50, 70), \
    (5, 5, 40, 80)
E = (120, 40, 60, 100)
IMAGES = [
    ("im1", 120, 200, [person(*A), person(*B), mask_region(*M), person(170, 0, 25, 30, ignore=1)]),
    ("im2", 120, 160, [person(*C)]),
    ("im3", 120, 160, [person(*D), person(*E)]),
] + [(f"im{k}", 64, 96, []) for k in range(4, 9)]


@pytest.fixture(scope="module")
def crowdhuman_tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("crowdhuman")
    odgt, image_dir = write_crowdhuman(str(root), "annotation_val.odgt", IMAGES)
    name = "crowdhuman_tiny_eval"
    if name not in DatasetCatalog.list():
        register_crowdhuman(name, odgt, image_dir)
    return name, odgt, image_dir


def _xyxy(x, y, w, h):
    return [x, y, x + w, y + h]


def test_loader_reads_full_body_boxes_ignores_and_image_sizes(crowdhuman_tiny):
    _, odgt, image_dir = crowdhuman_tiny
    records = load_crowdhuman_odgt(odgt, image_dir)
    assert [r["image_id"] for r in records] == [i[0] for i in IMAGES]
    im1, _, im3 = records[:3]
    assert (im1["height"], im1["width"]) == (120, 200)
    assert [a["iscrowd"] for a in im1["annotations"]] == [0, 0, 1, 1]  # mask, extra.ignore
    assert im1["annotations"][0]["bbox"] == _xyxy(*A)
    assert all(a["category_id"] == 0 and a["bbox_mode"] == BoxMode.XYXY_ABS
               for r in records for a in r["annotations"])
    assert im3["annotations"][1]["bbox"] == [120, 40, 160, 120]  # clipped to 160 x 120
    visible = load_crowdhuman_odgt(odgt, image_dir, box_key="vbox")
    assert visible[0]["annotations"][0]["bbox"] == _xyxy(10, 10, 40, 45)
    assert all(len(r["annotations"]) == 0 for r in records[3:])


def test_missing_files_and_bad_records_fail_clearly(tmp_path, crowdhuman_tiny):
    _, odgt, image_dir = crowdhuman_tiny
    missing = tmp_path / "annotation_val.odgt"
    with pytest.raises(DatasetFilesNotFoundError, match=str(missing)) as info:
        load_crowdhuman_odgt(str(missing), image_dir)
    assert "Images/<ID>.jpg" in str(info.value)  # the expected layout is shown
    bad = tmp_path / "bad.odgt"
    bad.write_text('{"ID": "im1", "gtboxes": []}\n{"gtboxes": []}\n')
    with pytest.raises(ValueError, match="bad.odgt:2"):
        load_crowdhuman_odgt(str(bad), image_dir)
    no_image = tmp_path / "no_image.odgt"
    no_image.write_text('{"ID": "not_there", "gtboxes": []}\n')
    with pytest.raises(DatasetFilesNotFoundError, match="not_there.jpg"):
        load_crowdhuman_odgt(str(no_image), image_dir)


def _evaluate(name, tmp_path, detections):
    """``detections``: {image id: [(x, y, w, h, score)]} (class person)."""
    cfg = add_all_configs(get_cfg())
    evaluator = build_dataset_evaluator(cfg, name, str(tmp_path))
    assert isinstance(evaluator, CrowdHumanEvaluator)
    evaluator._distributed = False
    evaluator.reset()
    for record in DatasetCatalog.get(name):
        dets = detections.get(record["image_id"], [])
        inst = Instances((record["height"], record["width"]))
        inst.pred_boxes = Boxes(torch.tensor([_xyxy(*d[:4]) for d in dets],
                                             dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.tensor([d[4] for d in dets], dtype=torch.float32)
        inst.pred_classes = torch.zeros(len(dets), dtype=torch.int64)
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": inst}])
    return evaluator.evaluate()["bbox"]


def test_constructed_case_matches_hand_computed_miss_rate(crowdhuman_tiny, tmp_path):
    name = crowdhuman_tiny[0]
    dets = {
        # inside the mask region (ignored, highest score), A, B, a duplicate of A (FP)
        "im1": [(115, 10, 50, 90, 0.95), (*A, 0.9), (*B, 0.8), (11, 12, 40, 88, 0.7)],
        "im2": [(*C, 0.6), (100, 80, 30, 30, 0.75)],  # C and a background FP
        "im3": [(*D, 0.3)],  # E is missed
        "im4": [(10, 10, 30, 30, 0.5)],  # FP on an image without people
    }
    res = _evaluate(name, tmp_path, dets)
    # by score (ignored one dropped): TP TP FP FP TP FP TP, 5 GT, 8 images ->
    # (FPPI, MR): (0,.8) (0,.6) (.125,.6) (.25,.6) (.25,.4) (.375,.4) (.375,.2)
    # refs 0.01..0.1 -> .6 ; 0.178 -> .6 ; 0.316 -> .4 ; 0.562, 1 -> .2
    expected = math.exp((6 * math.log(0.6) + math.log(0.4) + 2 * math.log(0.2)) / 9)
    assert res["mMR"] == pytest.approx(100 * expected, rel=1e-9)
    assert 0 < res["AP50"] < 100


def test_ignore_regions_are_neither_misses_nor_false_positives(crowdhuman_tiny, tmp_path):
    name = crowdhuman_tiny[0]
    perfect = {"im1": [(*A, 0.9), (*B, 0.9)], "im2": [(*C, 0.9)],
               "im3": [(*D, 0.9), (120, 40, 40, 80, 0.9)]}
    res = _evaluate(name, tmp_path / "perfect", perfect)
    assert res["mMR"] < 1e-6 and res["AP50"] == pytest.approx(100)
    # many confident detections on the ignore regions change nothing
    on_ignores = {k: list(v) for k, v in perfect.items()}
    on_ignores["im1"] += [(112, 8, 55, 95, 0.99), (130, 20, 30, 60, 0.98), (171, 1, 24, 29, 0.97)]
    res = _evaluate(name, tmp_path / "ignores", on_ignores)
    assert res["mMR"] < 1e-6 and res["AP50"] == pytest.approx(100)
    # the same detections count as false positives once they leave the ignore region
    outside = {k: list(v) for k, v in perfect.items()}
    outside["im2"] = [(100, 5, 55, 95, 0.99)] + outside["im2"]
    res = _evaluate(name, tmp_path / "outside", outside)
    assert res["mMR"] > 1e-6 and res["AP50"] < 100


def test_no_detections_give_miss_rate_one(crowdhuman_tiny, tmp_path):
    res = _evaluate(crowdhuman_tiny[0], tmp_path, {})
    assert res["mMR"] == pytest.approx(100) and res["AP50"] == 0


def test_registered_splits_are_lazy_and_named():
    for name in ("crowdhuman_train", "crowdhuman_val"):
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "crowdhuman" and meta.thing_classes == ["person"]
        assert meta.odgt_file.endswith(("annotation_train.odgt", "annotation_val.odgt"))
