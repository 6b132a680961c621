"""The embedded primitives dataset: deterministic, exact boxes, no overlap, registered, and its
Faster R-CNN config trains and evaluates on it."""
import filecmp
import json
import math
import os
from collections import defaultdict

import cv2
import numpy as np

from d2ext.datasets.primitives import (
    MIN_CONTRAST,
    NOISE_STD,
    PRIMITIVES_CLASSES,
    PRIMITIVES_SPLITS,
    generate_primitives_split,
    register_primitives_split,
    render_primitives_image,
)
from detectron2.data import DatasetCatalog, MetadataCatalog
from tests.conftest import config_path, read_metrics, run_train_net


def _generate(root, seed, n):
    with open(generate_primitives_split(str(root), "split", n, seed)) as f:
        return json.load(f)


def _boxes_by_image(coco):
    by_image = defaultdict(list)
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    return by_image


def test_same_seed_gives_identical_bytes(tmp_path):
    runs = {name: generate_primitives_split(str(tmp_path / name), "split", 6, seed)
            for name, seed in [("a", 3), ("b", 3), ("c", 4)]}
    assert filecmp.cmp(runs["a"], runs["b"], shallow=False)
    images = sorted(os.listdir(tmp_path / "a" / "split"))
    assert len(images) == 6
    _, mismatch, errors = filecmp.cmpfiles(
        tmp_path / "a" / "split", tmp_path / "b" / "split", images, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert not filecmp.cmp(runs["a"], runs["c"], shallow=False)
    _, mismatch, _ = filecmp.cmpfiles(
        tmp_path / "a" / "split", tmp_path / "c" / "split", images, shallow=False)
    assert mismatch == images


def test_boxes_are_the_tight_boxes_of_the_drawn_objects(tmp_path):
    """Recomputed from the image as drawn (before JPEG): a pixel belongs to an object iff it is
    over MIN_CONTRAST / 2 from the background colour in some channel; the objects' pixels lie
    exactly in the annotated boxes, fill them to their edges and number ``area``."""
    seed, n = 5, 20
    coco = _generate(tmp_path, seed, n)
    by_image = _boxes_by_image(coco)
    for i in range(n):
        raw, objects = render_primitives_image(np.random.default_rng([seed, i]))
        anns = by_image[i + 1]
        assert [(a["category_id"] - 1, a["bbox"], a["area"]) for a in anns] == objects
        outside = np.ones(raw.shape[:2], dtype=bool)
        for x, y, w, h in (a["bbox"] for a in anns):
            outside[y:y + h, x:x + w] = False
        image = raw.astype(np.int64)
        background = np.median(image[outside], axis=0)
        foreground = np.abs(image - background).max(axis=2) > MIN_CONTRAST / 2
        assert not foreground[outside].any(), "the noise never reaches an object's colour"
        for ann in anns:
            x, y, w, h = ann["bbox"]
            inside = foreground[y:y + h, x:x + w]
            assert inside.sum() == ann["area"]
            assert inside[0].any() and inside[-1].any()
            assert inside[:, 0].any() and inside[:, -1].any()
        # the JPEG on disk is this image, less part of its noise
        decoded = cv2.imread(str(tmp_path / "split" / f"{i:06d}.jpg"))[:, :, ::-1]
        assert np.abs(decoded.astype(np.int64) - image).mean() < NOISE_STD


def test_objects_are_sized_separate_and_of_every_class(tmp_path):
    coco = _generate(tmp_path, seed=0, n=50)
    assert [c["name"] for c in coco["categories"]] == list(PRIMITIVES_CLASSES)
    assert {(im["width"], im["height"]) for im in coco["images"]} == {(256, 256)}
    by_image = _boxes_by_image(coco)
    assert set(by_image) == {im["id"] for im in coco["images"]}, "every image has an object"
    assert {len(anns) for anns in by_image.values()} == {1, 2, 3, 4, 5}
    for anns in by_image.values():
        boxes = np.array([a["bbox"] for a in anns])
        x0, y0 = boxes[:, 0], boxes[:, 1]
        x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
        assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 256).all() and (y1 <= 256).all()
        assert ((boxes[:, 2:] >= 16) & (boxes[:, 2:] <= 96)).all()
        assert (boxes[:, 2:].max(axis=1) <= 2 * boxes[:, 2:].min(axis=1)).all()
        iw = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])
        ih = np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None])
        overlap = (iw > 0) & (ih > 0)
        assert not np.triu(overlap, k=1).any(), "no two boxes of an image overlap"
        for ann in anns:
            assert 0 < ann["area"] <= ann["bbox"][2] * ann["bbox"][3] and ann["iscrowd"] == 0
    categories = [a["category_id"] for a in coco["annotations"]]
    assert set(categories) == {1, 2, 3}
    fill = defaultdict(list)  # area / box area per class
    for a in coco["annotations"]:
        fill[a["category_id"]].append(a["area"] / (a["bbox"][2] * a["bbox"][3]))
    assert min(fill[1]) == 1.0
    assert abs(np.mean(fill[2]) - math.pi / 4) < 0.02
    assert abs(np.mean(fill[3]) - 0.5) < 0.03


def test_registered_split_generates_on_first_use(tmp_path):
    register_primitives_split("primitives_test_lazy", 7, seed=2, root=str(tmp_path))
    meta = MetadataCatalog.get("primitives_test_lazy")
    assert not os.path.exists(meta.json_file), "nothing is written before first use"
    dicts = DatasetCatalog.get("primitives_test_lazy")
    assert len(dicts) == 7 and all(os.path.isfile(d["file_name"]) for d in dicts)
    assert meta.thing_classes == list(PRIMITIVES_CLASSES) and meta.evaluator_type == "coco"
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
    assert len(meta.thing_colors) == 3
    assert {a["category_id"] for d in dicts for a in d["annotations"]} <= {0, 1, 2}
    mtime = os.path.getmtime(meta.json_file)
    DatasetCatalog.get("primitives_test_lazy")
    assert os.path.getmtime(meta.json_file) == mtime, "a complete split is not rewritten"


def test_default_splits_registered():
    assert PRIMITIVES_SPLITS == {"primitives_train": (600, 0), "primitives_val": (150, 1)}
    for name in PRIMITIVES_SPLITS:
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == list(PRIMITIVES_CLASSES) and meta.evaluator_type == "coco"
        assert os.path.basename(meta.json_file) == f"{name}.json"


def test_faster_rcnn_config_trains_and_evaluates(tiny_primitives, tmp_path):
    out = tmp_path / "run"
    results = run_train_net(
        config_path("primitives", "faster_rcnn_R_18_FPN.yaml"), out,
        "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "(1,)", "SOLVER.CHECKPOINT_PERIOD", "100",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", datasets=tiny_primitives,
    )
    metrics = read_metrics(out)
    losses = [v for m in metrics for k, v in m.items() if "loss" in k]
    assert losses and all(math.isfinite(v) for v in losses)
    assert {"AP", "AP50", "AP75", "AP90"} <= set(results["bbox"])
    assert "bbox/AP-triangle" in [m for m in metrics if "bbox/AP" in m][0]
    assert (out / "model_final.pth").is_file()
