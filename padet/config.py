"""Config of PADet (PosNeg-balanced anchors with aligned features): the ``MODEL.PADET`` node."""
from detectron2.config import CfgNode as CN

__all__ = ["add_padet_config"]


def add_padet_config(cfg):
    """Add the method-owned node ``MODEL.PADET``; each key carries its paper symbol."""
    cfg.MODEL.PADET = CN()

    # --- Data: input size and SSD augmentation (spec §2.8; padet/augmentation.py) ---
    cfg.MODEL.PADET.INPUT_SIZE = 384  # square input side, images warped to it (paper: 384 or 512)
    cfg.MODEL.PADET.AUG_STYLE = "ssd"  # "ssd": distort, expand, crop, flip; "rfbnet": crop, distort, expand (p 0.6), flip
    cfg.MODEL.PADET.PHOTOMETRIC = True  # SSD photometric distortion (brightness, contrast, saturation, hue)
    cfg.MODEL.PADET.EXPAND_MAX_RATIO = 4.0  # SSD expand: canvas U(1, this) x image size, mean-filled
    cfg.MODEL.PADET.CROP_MIN_IOUS = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]  # SSD crop min-IoU choices (0: any crop), plus "no crop"
    cfg.MODEL.PADET.MIN_BOX_SIZE = 0.01  # drop training boxes whose shorter side < this x INPUT_SIZE
