"""The embedded shapes dataset: deterministic, valid COCO, hard enough to localize."""
import copy
import filecmp
import hashlib
import json
import os

import numpy as np
import torch

from d2ext.datasets.shapes import (
    SHAPES_CLASSES,
    SHAPES_SPLITS,
    generate_shapes_split,
    register_shapes_split,
)
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import transforms as T


def _generate(root, seed, n=12):
    return generate_shapes_split(str(root), "split", n, seed)


def test_same_seed_gives_identical_bytes(tmp_path):
    a = _generate(tmp_path / "a", seed=3)
    b = _generate(tmp_path / "b", seed=3)
    assert filecmp.cmp(a, b, shallow=False)
    images = sorted(os.listdir(tmp_path / "a" / "split"))
    assert len(images) == 12
    match, mismatch, errors = filecmp.cmpfiles(
        tmp_path / "a" / "split", tmp_path / "b" / "split", images, shallow=False
    )
    assert (mismatch, errors) == ([], [])
    c = _generate(tmp_path / "c", seed=4)
    assert not filecmp.cmp(a, c, shallow=False)


# SHA-256 of generate_shapes_split(root, "split", 5, seed=7)'s files, recorded with the
# generator before d2ext.datasets.synthetic was factored out of it: the shared writer changed no
# byte. The JPEG hashes are those of the OpenCV in requirements.txt (its JPEG encoder).
SPLIT_SHA256 = {
    "split.json": "37e705aee52f8b1a1d65f30d62d79e9f9992389f62bc3711c44df11196021cdd",
    "split/000000.jpg": "4e0bda3e50bf839d6435d56342cced37c636314dd520b173d7b950bf85b3ff9f",
    "split/000001.jpg": "aa272264dcdbb80f7276bb93bae65cffb44be94a4215a71fba2fdd0042a9f1b0",
    "split/000002.jpg": "7020e9ae588a8dfb0ba0535b8f4e62a77902f62f7108cda0e79af0477606d545",
    "split/000003.jpg": "e89a3527d42036cb6a878a08f746f75190ba522cf2440f9092a26093eb0095d7",
    "split/000004.jpg": "b41899d1ec8be52581ddc82ba04afed2378726220bd60d5ff617ddcb77354475",
}


def test_output_is_unchanged(tmp_path):
    _generate(tmp_path, seed=7, n=5)
    written = sorted(os.path.relpath(os.path.join(d, f), tmp_path)
                     for d, _, files in os.walk(tmp_path) for f in files)
    assert written == sorted(SPLIT_SHA256)
    for name, digest in SPLIT_SHA256.items():
        with open(tmp_path / name, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name


def test_annotations_are_valid_coco(tmp_path):
    with open(_generate(tmp_path, seed=0, n=40)) as f:
        coco = json.load(f)
    assert [c["name"] for c in coco["categories"]] == list(SHAPES_CLASSES)
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    assert len(coco["annotations"]) >= 2 * 40 * 0.8
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height
        assert 0 < ann["area"] <= w * h and ann["iscrowd"] == 0
        assert 1 <= ann["category_id"] <= len(SHAPES_CLASSES)


def test_dataset_is_varied_and_crowded(tmp_path):
    with open(_generate(tmp_path, seed=0, n=60)) as f:
        coco = json.load(f)
    boxes = np.array([a["bbox"] for a in coco["annotations"]], dtype=float)
    scale = np.sqrt(boxes[:, 2] * boxes[:, 3])
    aspect = boxes[:, 2] / boxes[:, 3]
    assert (scale < 16).mean() > 0.1, "small objects"
    assert (scale > 64).mean() > 0.05, "large objects"
    assert aspect.min() < 0.5 and aspect.max() > 2.0, "elongated objects both ways"
    assert len({a["category_id"] for a in coco["annotations"]}) == len(SHAPES_CLASSES)
    # occlusion: some visible areas are well below their box area, and boxes overlap
    areas = np.array([a["area"] for a in coco["annotations"]])
    assert (areas < 0.5 * boxes[:, 2] * boxes[:, 3]).mean() > 0.05
    overlapping = 0
    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    for bbs in by_image.values():
        b = np.array(bbs, dtype=float)
        x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
        iw = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])
        ih = np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None])
        inter = np.triu((iw > 0) & (ih > 0), k=1)
        overlapping += int(inter.sum())
    assert overlapping >= 10


def test_registered_split_generates_on_first_use(tmp_path):
    register_shapes_split("shapes_test_lazy", 5, seed=2, root=str(tmp_path))
    meta = MetadataCatalog.get("shapes_test_lazy")
    assert not os.path.exists(meta.json_file), "nothing is written before first use"
    dicts = DatasetCatalog.get("shapes_test_lazy")
    assert len(dicts) == 5 and os.path.isfile(meta.json_file)
    assert meta.thing_classes == list(SHAPES_CLASSES) and meta.evaluator_type == "coco"
    assert all(os.path.isfile(d["file_name"]) for d in dicts)
    mtime = os.path.getmtime(meta.json_file)
    DatasetCatalog.get("shapes_test_lazy")
    assert os.path.getmtime(meta.json_file) == mtime, "a complete split is not rewritten"


def test_default_splits_registered():
    for name in SHAPES_SPLITS:
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).thing_classes == list(SHAPES_CLASSES)


def test_resized_boxes_are_not_truncated(tmp_path):
    """A registered split's boxes are floats, so detectron2's training mapper resizes them
    exactly: at about half size every GT box is the stored box times the scale (integer boxes
    would be truncated to whole pixels)."""
    register_shapes_split("shapes_test_float", 4, seed=3, root=str(tmp_path))
    dicts = DatasetCatalog.get("shapes_test_float")
    boxes = [a["bbox"] for d in dicts for a in d["annotations"]]
    assert boxes and all(isinstance(v, float) for b in boxes for v in b)
    assert any(v % 2 for b in boxes for v in b), "odd coordinates: halving them needs .5"
    for d in dicts:
        h, w = d["height"] // 2, d["width"] // 2
        mapper = DatasetMapper(is_train=True, image_format="BGR",
                               augmentations=[T.Resize((h, w))])
        gt = mapper(copy.deepcopy(d))["instances"].gt_boxes.tensor
        stored = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in
                               (a["bbox"] for a in d["annotations"])])
        scale = torch.tensor([w / d["width"], h / d["height"]] * 2)
        assert torch.allclose(gt, stored * scale, atol=1e-4)
