"""Config of IoU-balanced losses (Wu et al.): the ``MODEL.IOU_BALANCED`` node."""
from detectron2.config import CfgNode as CN

from .losses import W_LOC_MODES

__all__ = ["add_iou_balanced_config", "iou_balanced_options", "NORMALIZER_SCOPES"]

NORMALIZER_SCOPES = ("batch", "level")


def add_iou_balanced_config(cfg):
    """Add the method-owned node ``MODEL.IOU_BALANCED``; each key carries its paper symbol."""
    cfg.MODEL.IOU_BALANCED = CN()
    _C = cfg.MODEL.IOU_BALANCED
    # IoU-balanced classification loss on/off (Eq. 3-4; Table 2 / Table 7 "+cls" ablation)
    _C.CLS_ENABLED = True
    # IoU-balanced localization loss on/off (Eq. 5-6; Table 2 / Table 7 "+loc" ablation)
    _C.LOC_ENABLED = True
    # eta of Eq. 4: positives' classification weight iou^eta (paper 1.5 RetinaNet; 1.3 FRCNN)
    _C.ETA = 1.5
    # lambda of Eq. 6: localization weight w_loc * iou^lambda
    _C.LAMBDA = 1.5
    # how w_loc of Eq. 6 is set: "fixed" (W_LOC), "normalized" (Eq. 7 every iteration) or
    # "calibrate" (Eq. 7 at the first iteration with positives, then frozen and checkpointed)
    _C.W_LOC_MODE = "fixed"
    # w_loc of Eq. 6 for "fixed" (paper Table 3: 3.049 for RetinaNet R50, lambda 1.5)
    _C.W_LOC = 3.049
    # scope of the Eq. 4 normaliser Z: "batch" (all positives) or "level" (one per FPN level;
    # RetinaNet only)
    _C.NORMALIZER_SCOPE = "batch"


def iou_balanced_options(cfg):
    """``MODEL.IOU_BALANCED`` as the keyword arguments of the IoU-balanced heads' ``__init__``.

    Raises ValueError naming the key for an out-of-range value.
    """
    c = cfg.MODEL.IOU_BALANCED
    for key in ("ETA", "LAMBDA"):
        if not c[key] >= 0:
            raise ValueError(f"MODEL.IOU_BALANCED.{key} must be >= 0, got {c[key]}")
    if c.W_LOC_MODE not in W_LOC_MODES:
        raise ValueError(f"MODEL.IOU_BALANCED.W_LOC_MODE must be one of {W_LOC_MODES}, "
                         f"got {c.W_LOC_MODE!r}")
    if not c.W_LOC > 0:
        raise ValueError(f"MODEL.IOU_BALANCED.W_LOC must be > 0, got {c.W_LOC}")
    if c.NORMALIZER_SCOPE not in NORMALIZER_SCOPES:
        raise ValueError(f"MODEL.IOU_BALANCED.NORMALIZER_SCOPE must be one of "
                         f"{NORMALIZER_SCOPES}, got {c.NORMALIZER_SCOPE!r}")
    return {
        "cls_enabled": c.CLS_ENABLED,
        "loc_enabled": c.LOC_ENABLED,
        "eta": c.ETA,
        "lam": c.LAMBDA,
        "w_loc_mode": c.W_LOC_MODE,
        "w_loc": c.W_LOC,
        "normalizer_scope": c.NORMALIZER_SCOPE,
    }
