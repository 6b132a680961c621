"""Config of PADet (PosNeg-balanced anchors with aligned features): the ``MODEL.PADET`` node,
the ``INPUT.PADET`` node of its training augmentation, and the input-size check."""
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from projects.iou_balanced.config import add_iou_balanced_config

__all__ = [
    "add_padet_config", "check_padet_input_size", "check_padet_options", "PADET_MIN_INPUT_SIZE",
    "PADET_SIZE_DIVISIBILITY",
]

# detectron2's resize keys, which PADet does not read: it warps every image to a square of side
# MODEL.PADET.INPUT_SIZE
INPUT_SIZE_KEYS = ("MIN_SIZE_TRAIN", "MAX_SIZE_TRAIN", "MIN_SIZE_TEST", "MAX_SIZE_TEST")

# The encoder-decoder (padet/encoder_decoder.py, VGG-16 and ResNet encoders alike) pads its input
# to a multiple of 32, the stride of E3. Its levels D1..D6 have strides 8 ... 256; measured by
# building both models: at 128 px D1..D6 are 16, 8, 4, 2, 1, 1 cells, so D6, max-pooled from D5,
# repeats it; at 160 px they are 20, 10, 5, 3, 2, 1, six distinct scales.
PADET_SIZE_DIVISIBILITY = 32
PADET_MIN_INPUT_SIZE = 160


def add_padet_config(cfg):
    """Add the method-owned nodes ``MODEL.PADET`` and ``INPUT.PADET``; each key carries its paper
    symbol or section.

    Also adds ``MODEL.IOU_BALANCED``, which PADet reads for ``MODEL.PADET.IOU_BALANCED``.
    """
    add_iou_balanced_config(cfg)
    cfg.MODEL.PADET = CN()
    _C = cfg.MODEL.PADET
    # C, number of object classes of the softmax detection classifier (C + 1 with background)
    _C.NUM_CLASSES = 80
    # square input side, images warped to it (§3: 384 or 512); anchor sizes are fractions of it
    _C.INPUT_SIZE = 384
    # channels of the skip blocks, decoder levels D1..D6 and heads (CBRk-256, §3)
    _C.CHANNELS = 256
    # norm of every CBR block of the encoder extras, decoder and head ("BN", "SyncBN", ...)
    _C.NORM = "BN"
    # VGG-16 encoder: norm after each VGG conv ("" = plain ImageNet VGG, "BN" for scratch)
    _C.VGG_NORM = ""
    # VGG-16 encoder: width multiplier of the VGG convs, fc6/fc7 and extras (1.0 = VGG-16)
    _C.VGG_WIDTH = 1.0
    # anchor base size s_k = fraction * INPUT_SIZE for D1..D6, then s_7 (SSD300-COCO, §2.2)
    _C.ANCHOR_SIZE_FRACTIONS = [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]
    # extra aspect ratios per level: {r, 1/r} each; [2, 3] = 6 anchors, [2] = 4 anchors (§3)
    _C.ANCHOR_ASPECT_RATIOS = [[2, 3], [2, 3], [2, 3], [2, 3], [2], [2]]
    # clip the initial anchors to the image (SSD)
    _C.ANCHOR_CLIP = True
    # IoU thresholds of the matching (§3): < 0.3 negative, >= 0.5 positive, between ignored
    _C.IOU_THRESHOLDS = [0.3, 0.5]
    # box coder weights (wx, wy, ww, wh) = 1 / SSD variances (0.1, 0.2)
    _C.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    # beta of the smooth-L1 box losses L_r of APM and detection module
    _C.SMOOTH_L1_BETA = 1.0
    # hard-negative mining ratio of the APM's L_b (negatives : positives); 0 = all (§3.3's L)
    _C.APM_HNM_RATIO = 3
    # hard-negative mining ratio of the detection loss L_cls (0 = all non-ignored negatives)
    _C.DET_HNM_RATIO = 3
    # weight of L_apm (both L_b and L_r) in the total loss L = L_apm + L_det (§3.3: 1)
    _C.APM_LOSS_WEIGHT = 1.0
    # APM branches on detached D1..D6: L_apm does not train the shared encoder-decoder (§3.3)
    _C.APM_DETACH = False
    # promote only anchors with APM score p >= this; the rest keep their box (0 = all, §3.1)
    _C.APM_PROMOTE_THRESH = 0.0
    # Table 2 "APM_C": the APM's scores filter easy negatives (the theta rule, training and test)
    _C.APM_CLS = True
    # Table 2 "APM_R": the detection module works on the promoted anchors (False: the initial
    # ones). Both False is the "vanilla DSSD" encoder-decoder baseline: no APM loss either.
    _C.APM_REG = True
    # IoU-balanced losses (Wu et al., MODEL.IOU_BALANCED.*) in the detection head's L_cls and L_r
    _C.IOU_BALANCED = False
    # theta: negatives whose APM score p < theta are ignored in training, dropped at test (§3.1)
    _C.THETA = 0.01
    # FAM offset source (Table 1): "none", "implicit", "loc", "shape", "concat", "disentangled"
    _C.FAM_MODE = "disentangled"
    # detach X_l, X_s before the FAM offset convs F, G (§3.2)
    _C.FAM_DETACH = True
    # number of first decoder levels with FAM (§3.3: not on the last two levels)
    _C.FAM_LEVELS = 4
    # inference: class score threshold before soft-NMS (§3.3)
    _C.SCORE_THRESH_TEST = 0.01
    # inference: soft-NMS kernel, "linear" (paper) or "gaussian" (§3.3, [36])
    _C.SOFT_NMS_METHOD = "linear"
    # inference: soft-NMS N_t of the linear kernel
    _C.SOFT_NMS_IOU_THRESH = 0.3
    # inference: soft-NMS sigma of the Gaussian kernel
    _C.SOFT_NMS_SIGMA = 0.5
    # inference: boxes whose rescored score falls below this are removed during soft-NMS
    _C.SOFT_NMS_MIN_SCORE = 0.001
    # inference: top-k boxes per class entering soft-NMS (0 = all; a speed option)
    _C.PRE_NMS_TOPK_PER_CLASS = 0
    # detections kept per image: detectron2's TEST.DETECTIONS_PER_IMAGE (§3.3: top 300, set in
    # configs/padet/Base-PADet.yaml)

    # --- Training augmentation: "the SSD strategy" (§3.3 "Training"; padet/augmentation.py,
    # docs/padet_data.md). A method-owned sub-node of detectron2's INPUT node: the project adds
    # no keys to detectron2's own nodes, where they could collide with upstream keys of the same
    # names, but a sub-node named after the method cannot collide with upstream detectron2 keys.
    cfg.INPUT.PADET = CN()
    _A = cfg.INPUT.PADET
    # "ssd": distort, expand, crop, flip; "rfbnet": crop, distort, expand (p 0.6), flip
    _A.AUG_STYLE = "ssd"
    # SSD photometric distortion (brightness, contrast, saturation, hue)
    _A.PHOTOMETRIC = True
    # SSD expand: canvas U(1, this) x image size, mean-filled
    _A.EXPAND_MAX_RATIO = 4.0
    # SSD crop min-IoU choices (0: any crop), plus "no crop"
    _A.CROP_MIN_IOUS = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]
    # drop training boxes whose shorter side < this x MODEL.PADET.INPUT_SIZE
    _A.MIN_BOX_SIZE = 0.01


def check_padet_input_size(cfg):
    """Refuse an invalid ``MODEL.PADET.INPUT_SIZE``, or detectron2 resize keys that contradict
    it (``ValueError`` naming the key). Called when PADet's model and data mapper are built.

    ``MODEL.PADET.INPUT_SIZE`` must be a multiple of ``PADET_SIZE_DIVISIBILITY`` of at least
    ``PADET_MIN_INPUT_SIZE``. It is the one input size of PADet; ``INPUT.MIN_SIZE_TRAIN``,
    ``MAX_SIZE_TRAIN``, ``MIN_SIZE_TEST`` and ``MAX_SIZE_TEST`` are not read. Each may keep
    detectron2's default or equal the square side.
    """
    size = cfg.MODEL.PADET.INPUT_SIZE
    if size < PADET_MIN_INPUT_SIZE or size % PADET_SIZE_DIVISIBILITY:
        raise ValueError(
            f"MODEL.PADET.INPUT_SIZE = {size}: must be a multiple of {PADET_SIZE_DIVISIBILITY} "
            f"(the encoder-decoder's size divisibility) of at least {PADET_MIN_INPUT_SIZE}, so "
            "that the six levels D1..D6 have distinct sizes (paper §3: 384 or 512)")
    defaults = get_cfg().INPUT
    for key in INPUT_SIZE_KEYS:
        value, default = cfg.INPUT[key], defaults[key]
        if _sizes(value) != _sizes(default) and any(s != size for s in _sizes(value)):
            raise ValueError(
                f"INPUT.{key} = {value} contradicts MODEL.PADET.INPUT_SIZE = {size}: PADet warps "
                f"every image to that square and does not read INPUT.{key}; set the size with "
                f"MODEL.PADET.INPUT_SIZE and leave INPUT.{key} at detectron2's default "
                f"({default})")


# MODEL.PADET keys that are thresholds on the APM score p = sigmoid(logit), a probability
SCORE_THRESHOLD_KEYS = ("THETA", "APM_PROMOTE_THRESH")
NON_NEGATIVE_KEYS = ("APM_LOSS_WEIGHT", "APM_HNM_RATIO", "DET_HNM_RATIO")


def check_padet_options(cfg):
    """Refuse (``ValueError`` naming the key) ``MODEL.PADET`` loss and promotion options that
    have no meaning: a threshold on the APM score outside [0, 1], a negative loss weight or
    mining ratio, or ``APM_PROMOTE_THRESH`` above 0 without both APM branches (the score comes
    from ``APM_CLS``, the deltas from ``APM_REG``). Called when PADet's model is built."""
    p = cfg.MODEL.PADET
    for key in SCORE_THRESHOLD_KEYS:
        if not 0 <= p[key] <= 1:
            raise ValueError(f"MODEL.PADET.{key} = {p[key]}: must lie in [0, 1], it is a "
                             "threshold on the APM score p = sigmoid(logit)")
    for key in NON_NEGATIVE_KEYS:
        if not p[key] >= 0:
            raise ValueError(f"MODEL.PADET.{key} = {p[key]}: must be >= 0")
    if p.APM_PROMOTE_THRESH > 0 and not (p.APM_CLS and p.APM_REG):
        raise ValueError(
            f"MODEL.PADET.APM_PROMOTE_THRESH = {p.APM_PROMOTE_THRESH} needs both APM branches "
            "(MODEL.PADET.APM_CLS and APM_REG True): it promotes by the APM score")


def _sizes(value):
    """A size key's value as a tuple (MIN_SIZE_TRAIN is a tuple, the others are ints)."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)
