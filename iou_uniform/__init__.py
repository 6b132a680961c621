"""IoU-uniform R-CNN (Zhu et al., arXiv 1912.05190)."""
from .config import add_iou_uniform_config

__all__ = ["add_iou_uniform_config"]
