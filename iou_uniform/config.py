"""Config of IoU-uniform R-CNN (Zhu et al., arXiv 1912.05190): the ``MODEL.IOU_UNIFORM`` node."""
from detectron2.config import CfgNode as CN

__all__ = ["add_iou_uniform_config"]


def add_iou_uniform_config(cfg):
    """Add the method-owned node ``MODEL.IOU_UNIFORM``; each key carries its paper symbol."""
    cfg.MODEL.IOU_UNIFORM = CN()
