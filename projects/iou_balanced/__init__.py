"""IoU-balanced losses (Wu et al.): the loss functions, RetinaNet and the Faster R-CNN box head.

Other heads import the losses from here, e.g.
``from projects.iou_balanced import IoUBalancedLoss, iou_balanced_options``.
"""
from .balanced_loss import IoUBalancedLoss
from .config import add_iou_balanced_config, iou_balanced_options
from .fast_rcnn import IoUBalancedFastRCNNOutputLayers
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
from .retinanet import IoUBalancedRetinaNet  # registration: META_ARCH_REGISTRY
from .roi_heads import IoUBalancedROIHeads  # registration: ROI_HEADS_REGISTRY

__all__ = [
    "add_iou_balanced_config",
    "iou_balanced_options",
    "IoUBalancedLoss",
    "W_LOC_MODES",
    "IoUBalancedLocWeight",
    "iou_balanced_cls_weights",
    "iou_balanced_cross_entropy",
    "iou_balanced_sigmoid_focal_loss",
    "iou_balanced_smooth_l1_loss",
    "normalized_w_loc",
    "regressed_iou",
    "IoUBalancedRetinaNet",
    "IoUBalancedROIHeads",
    "IoUBalancedFastRCNNOutputLayers",
]
