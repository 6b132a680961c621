"""Each paper comparison ships as a (baseline, method) config pair that shares the recipe.

Both configs of a pair are resolved with ``train_net.load_config`` (detectron2's defaults, every
method node, the ``_BASE_`` chain) and compared key by key: they may differ only in the keys
of the method's allow-list. A recipe key (schedule, input size, RPN, loss β, clipping, ...) that
differs makes the paper's baseline-vs-method comparison invalid, so it fails here, naming the
key and both values.
"""
import glob
import os

import pytest

from train_net import load_config
from tests.conftest import REPO

# What each method may change. A key ending in ".*" allows the whole node under it.
IOU_UNIFORM = ("MODEL.ROI_HEADS.NAME", "MODEL.IOU_UNIFORM.*", "OUTPUT_DIR")
RGA = ("MODEL.RGA.*", "OUTPUT_DIR")
RGA_PRM = ("MODEL.ROI_HEADS.NAME", "MODEL.RGA.*", "MODEL.PRM.*", "OUTPUT_DIR")
IOU_BALANCED_RETINANET = ("MODEL.META_ARCHITECTURE", "MODEL.IOU_BALANCED.*", "OUTPUT_DIR")
IOU_BALANCED_RCNN = ("MODEL.ROI_HEADS.NAME", "MODEL.IOU_BALANCED.*", "OUTPUT_DIR")
PADET_COMPONENTS = ("MODEL.PADET.APM_CLS", "MODEL.PADET.APM_REG", "MODEL.PADET.FAM_MODE",
                    "OUTPUT_DIR")

# (paper table, baseline config, method config, allow-list); paths relative to configs/
PAIRS = [
    ("IoU-uniform Table 1 (VOC07)", "datasets/faster_rcnn_R_50_FPN_voc.yaml",
     "iou_uniform/faster_rcnn_R_50_FPN_voc.yaml", IOU_UNIFORM),
    ("IoU-uniform Table 2 (COCO, Faster R50)", "iou_uniform/faster_rcnn_R_50_FPN_1x_baseline.yaml",
     "iou_uniform/faster_rcnn_R_50_FPN_1x.yaml", IOU_UNIFORM),
    ("IoU-uniform Table 2 (COCO, Faster R101)",
     "iou_uniform/faster_rcnn_R_101_FPN_1x_baseline.yaml",
     "iou_uniform/faster_rcnn_R_101_FPN_1x.yaml", IOU_UNIFORM),
    ("IoU-uniform Table 2 (COCO, Cascade R50)",
     "iou_uniform/cascade_rcnn_R_50_FPN_1x_baseline.yaml",
     "iou_uniform/cascade_rcnn_R_50_FPN_1x.yaml", IOU_UNIFORM),
    ("RGA/PRM Table 2 (Faster R50 1x, + RGA)", "rga_prm/faster_rcnn_R_50_FPN_1x.yaml",
     "rga_prm/faster_rcnn_R_50_FPN_1x_rga.yaml", RGA),
    ("RGA/PRM Table 2 (Faster R50 1x, + RGA + PRM)", "rga_prm/faster_rcnn_R_50_FPN_1x.yaml",
     "rga_prm/faster_rcnn_R_50_FPN_1x_rga_prm.yaml", RGA_PRM),
    ("RGA/PRM Table 2 (Faster R50 2x, + RGA + PRM)", "rga_prm/faster_rcnn_R_50_FPN_2x.yaml",
     "rga_prm/faster_rcnn_R_50_FPN_2x_rga_prm.yaml", RGA_PRM),
    ("RGA/PRM Table 2 (Cascade R50 1x, + RGA + PRM)", "rga_prm/cascade_rcnn_R_50_FPN_1x.yaml",
     "rga_prm/cascade_rcnn_R_50_FPN_1x_rga_prm.yaml", RGA_PRM),
    ("RGA/PRM Table 7 (CrowdHuman)", "datasets/faster_rcnn_R_50_FPN_crowdhuman.yaml",
     "rga_prm/crowdhuman_faster_rcnn_R_50_FPN_rga_prm.yaml", RGA_PRM),
    ("IoU-balanced Tables 1/4 (COCO, RetinaNet R50)",
     "iou_balanced/retinanet_R_50_FPN_1x_baseline.yaml",
     "iou_balanced/retinanet_R_50_FPN_1x.yaml", IOU_BALANCED_RETINANET),
    ("IoU-balanced Tables 1/4 (COCO, RetinaNet R101)",
     "iou_balanced/retinanet_R_101_FPN_1x_baseline.yaml",
     "iou_balanced/retinanet_R_101_FPN_1x.yaml", IOU_BALANCED_RETINANET),
    ("IoU-balanced Table 5 (VOC07, RetinaNet R50)", "datasets/retinanet_R_50_FPN_voc.yaml",
     "iou_balanced/retinanet_R_50_FPN_voc.yaml", IOU_BALANCED_RETINANET),
    ("IoU-balanced Table 6 (Cityscapes, RetinaNet R50)",
     "datasets/retinanet_R_50_FPN_cityscapes.yaml",
     "iou_balanced/retinanet_R_50_FPN_cityscapes.yaml", IOU_BALANCED_RETINANET),
    ("IoU-balanced Table 7 (COCO, Faster R50)",
     "iou_balanced/faster_rcnn_R_50_FPN_1x_baseline.yaml",
     "iou_balanced/faster_rcnn_R_50_FPN_1x.yaml", IOU_BALANCED_RCNN),
    ("PADet Table 2 (COCO, VGG-16 384)", "padet/padet_vgg16_384_baseline.yaml",
     "padet/padet_vgg16_384.yaml", PADET_COMPONENTS),
    # the embedded primitives dataset (CPU), where the baseline already localizes well
    ("IoU-uniform R-CNN on primitives", "primitives/faster_rcnn_R_18_FPN.yaml",
     "primitives/iou_uniform_R_18_FPN.yaml", IOU_UNIFORM),
    ("IoU-balanced Faster R-CNN on primitives", "primitives/faster_rcnn_R_18_FPN.yaml",
     "primitives/iou_balanced_faster_rcnn_R_18_FPN.yaml", IOU_BALANCED_RCNN),
]

# Folders whose every leaf config belongs to a pair (PADet: only Table 2's VGG-16 384).
PAIRED_FOLDERS = ("iou_uniform", "rga_prm", "iou_balanced", "datasets", "primitives")


def _resolve(rel):
    return load_config(os.path.join(REPO, "configs", rel))


def _freeze(value):
    """Lists and tuples compare equal when their items do: YAML gives either for a sequence."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def flatten(node, prefix=""):
    """``{"MODEL.RPN.POST_NMS_TOPK_TRAIN": 2000, ...}`` of a resolved config."""
    flat = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = _freeze(value)
    return flat


def differing_keys(cfg_a, cfg_b):
    a, b = flatten(cfg_a), flatten(cfg_b)
    return {k: (a.get(k, "<absent>"), b.get(k, "<absent>"))
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")}


def is_allowed(key, allow_list):
    return any(key == p or (p.endswith(".*") and key.startswith(p[:-1])) for p in allow_list)


@pytest.mark.parametrize("table,baseline,method,allow_list", PAIRS, ids=[p[0] for p in PAIRS])
def test_pair_differs_only_in_the_methods_keys(table, baseline, method, allow_list):
    diff = differing_keys(_resolve(baseline), _resolve(method))
    recipe = {k: v for k, v in diff.items() if not is_allowed(k, allow_list)}
    assert not recipe, (
        f"{table}: {baseline} and {method} must share the recipe; they also differ in "
        + "; ".join(f"{k}: {b!r} (baseline) vs {m!r} (method)" for k, (b, m) in recipe.items())
    )
    assert "OUTPUT_DIR" in diff, "each config of a pair writes to its own OUTPUT_DIR"
    assert set(diff) - {"OUTPUT_DIR"}, f"{method} changes no method key of {baseline}"


def test_allow_list_matching():
    assert is_allowed("MODEL.IOU_UNIFORM.EFO", IOU_UNIFORM)
    assert is_allowed("MODEL.ROI_HEADS.NAME", IOU_UNIFORM)
    assert not is_allowed("MODEL.ROI_HEADS.NAME_X", IOU_UNIFORM)
    assert not is_allowed("MODEL.IOU_UNIFORMX", IOU_UNIFORM)
    assert not is_allowed("SOLVER.BASE_LR", RGA_PRM)


def test_differing_keys_names_recipe_changes():
    base = _resolve("iou_balanced/retinanet_R_50_FPN_1x_baseline.yaml")
    changed = base.clone()
    changed.SOLVER.WARMUP_ITERS += 1
    changed.INPUT.MIN_SIZE_TRAIN = list(changed.INPUT.MIN_SIZE_TRAIN)  # list == tuple
    assert differing_keys(base, changed) == {
        "SOLVER.WARMUP_ITERS": (base.SOLVER.WARMUP_ITERS, base.SOLVER.WARMUP_ITERS + 1)}


def test_every_paper_config_is_in_a_pair():
    paired = {p for _, b, m, _ in PAIRS for p in (b, m)}
    leaves = sorted(
        os.path.relpath(p, os.path.join(REPO, "configs"))
        for folder in PAIRED_FOLDERS
        for p in glob.glob(os.path.join(REPO, "configs", folder, "*.yaml"))
        if not os.path.basename(p).startswith("Base-")
    )
    unpaired = [c for c in leaves if c not in paired]
    assert not unpaired, f"configs without a baseline/method pair: {unpaired}"
    missing = [p for p in paired if not os.path.isfile(os.path.join(REPO, "configs", p))]
    assert not missing, f"pair configs that do not exist: {missing}"
