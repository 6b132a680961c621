"""IoU-balanced losses (Wu et al.)."""
from .config import add_iou_balanced_config

__all__ = ["add_iou_balanced_config"]
