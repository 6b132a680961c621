"""Config of IoU-uniform R-CNN (Zhu et al., arXiv 1912.05190): the ``MODEL.IOU_UNIFORM`` node.

Defaults follow the paper (§3.1, §4.1, Eq. 2) and, where it is silent or differs, the authors'
code (github.com/zl1994/IoU-Uniform-R-CNN, mmdetection v1); docs/iou_uniform.md lists every
key. Intervals are lower-open and upper-closed: (lo, hi], as in the authors' code (the paper
writes [lo, hi)).
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_iou_uniform_config"]

# Generator tables of the authors' cascade (``CascadeRCNN_IoU`` in their code; the paper gives
# none): stage 1 (G1) is the Faster R-CNN table; stages 2-3 (G2, G3) drop the low intervals.
# (lo, hi] intervals with their centre offset s and width/height scale range [lo, hi].
_G1 = {
    "INTERVALS": ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 1.0)),
    "CENTER_OFFSETS": (0.75, 0.5, 0.3, 0.125),
    "SCALE_RANGES": ((0.5, 2.0), (0.6, 1.6), (0.7, 1.4), (0.8, 1.25)),
}
_G2 = {
    "INTERVALS": ((0.6, 0.7), (0.7, 0.8), (0.8, 1.0), (0.9, 1.0)),
    "CENTER_OFFSETS": (0.5, 0.3, 0.125, 0.125),
    "SCALE_RANGES": ((0.6, 1.6), (0.7, 1.4), (0.8, 1.25), (0.9, 1.25)),
}
_G3 = {
    "INTERVALS": ((0.7, 0.8), (0.8, 1.0), (0.9, 1.0)),
    "CENTER_OFFSETS": (0.3, 0.125, 0.125),
    "SCALE_RANGES": ((0.7, 1.4), (0.8, 1.25), (0.9, 1.25)),
}


def add_iou_uniform_config(cfg):
    """Add the method-owned node ``MODEL.IOU_UNIFORM``; each key carries its paper symbol."""
    _C = cfg.MODEL.IOU_UNIFORM = CN()
    # --- sample generator (Eq. 1, §3.1) ---
    # interval boundaries u_0 < ... < u_4 of the IoU intervals (u_{j-1}, u_j] (§3.1)
    _C.INTERVALS = [0.5, 0.6, 0.7, 0.8, 1.0]
    # samples kept per GT and interval at most (M of Eq. 1; authors' code: 16)
    _C.NUM_PER_INTERVAL = 16
    # jittered candidates drawn per GT and interval, drawn once (authors' code)
    _C.NUM_ATTEMPTS = 500
    # centre offset range s_j: ox, oy ~ U(-s_j, s_j) in units of the GT w, h (Eq. 1)
    _C.CENTER_OFFSETS = list(_G1["CENTER_OFFSETS"])
    # width/height scale range [lo_j, hi_j]: sw, sh ~ U(lo_j, hi_j) (Eq. 1)
    _C.SCALE_RANGES = [list(r) for r in _G1["SCALE_RANGES"]]
    # keep a sample only if its own GT is its best-matching GT (§3.1; ties: lowest index)
    _C.ARGMAX_FILTER = True
    # generate samples around at most this many GTs per image, drawn at random when an image has
    # more (0 = all). Bounds time and memory on crowded images (1,000 GTs: docs/iou_uniform.md);
    # not in the paper; above the GT count of typical COCO and VOC training images
    _C.MAX_GTS_PER_IMAGE = 300
    # --- heads and losses (§3.1, Eq. 2) ---
    # train the regression + IoU tower on generated samples (False: positive RPN RoIs, Table 6)
    _C.GENERATED_SAMPLES = True
    # regression loss weight w_j per IoU interval of INTERVALS (Eq. 2; [1, 1, 1, 1]: no tuning)
    _C.REG_INTERVAL_WEIGHTS = [1.0, 1.5, 3.0, 3.0]
    # smooth-L1 beta of the box-regression loss L_reg
    _C.REG_BETA = 1.0
    # smooth-L1 beta of the IoU loss L_iou (on the predicted IoU u vs the target t)
    _C.IOU_BETA = 0.5
    # weight of L_iou in the total loss
    _C.IOU_LOSS_WEIGHT = 1.0
    # apply a sigmoid to the IoU output u (in the loss and at test)
    _C.IOU_SIGMOID = False
    # tower init: "detectron2" (c2_xavier FCs, deltas N(0, 0.001), IoU N(0, 0.01)), "torch_default"
    _C.INIT = "detectron2"
    # --- inference (§3.2) ---
    # eliminating feature offsets: re-pool at the refined box and predict its IoU there (§3.2)
    _C.EFO = True
    # detection score: "cls_x_iou" (p_c * u, Fig. 5) or "cls" (p_c)
    _C.SCORE_MODE = "cls_x_iou"
    # --- Cascade variant (§4.2, authors' CascadeRCNN_IoU) ---
    # per-stage generator intervals (lo, hi] (G1, G2, G3)
    _C.CASCADE_INTERVALS = [[list(i) for i in g["INTERVALS"]] for g in (_G1, _G2, _G3)]
    # per-stage centre offset ranges s_j, one per interval of CASCADE_INTERVALS
    _C.CASCADE_CENTER_OFFSETS = [list(g["CENTER_OFFSETS"]) for g in (_G1, _G2, _G3)]
    # per-stage width/height scale ranges [lo_j, hi_j], one per interval
    _C.CASCADE_SCALE_RANGES = [[list(r) for r in g["SCALE_RANGES"]] for g in (_G1, _G2, _G3)]
    # per-stage samples kept per GT and interval (M of Eq. 1)
    _C.CASCADE_NUM_PER_INTERVAL = [16, 16, 20]
    # per-stage argmax filter of the generator
    _C.CASCADE_ARGMAX_FILTER = [True, False, False]
    # resample 512 RoIs per stage from the previous stage's refined RoIs (mmdet v1); False: relabel
    _C.CASCADE_RESAMPLE = True
    # stage loss weights lw_s, each stage's losses counted once
    _C.CASCADE_STAGE_LOSS_WEIGHTS = [1.0, 0.5, 0.25]
    # test-time class score: softmax of the mean stage "logits" or mean of stage "probs"
    _C.CASCADE_TEST_SCORE = "logits"
