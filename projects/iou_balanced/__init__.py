"""IoU-balanced losses (Wu et al.): the loss functions, RetinaNet and the Faster R-CNN box head."""
from .config import add_iou_balanced_config
from .losses import (
    W_LOC_MODES,
    IoUBalancedLocWeight,
    iou_balanced_cls_weights,
    iou_balanced_cross_entropy,
    iou_balanced_sigmoid_focal_loss,
    iou_balanced_smooth_l1_loss,
    normalized_w_loc,
    regressed_iou,
)

__all__ = [
    "add_iou_balanced_config",
    "W_LOC_MODES",
    "IoUBalancedLocWeight",
    "iou_balanced_cls_weights",
    "iou_balanced_cross_entropy",
    "iou_balanced_sigmoid_focal_loss",
    "iou_balanced_smooth_l1_loss",
    "normalized_w_loc",
    "regressed_iou",
]
