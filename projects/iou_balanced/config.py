"""Config of IoU-balanced losses (Wu et al.): the ``MODEL.IOU_BALANCED`` node."""
from detectron2.config import CfgNode as CN

__all__ = ["add_iou_balanced_config"]


def add_iou_balanced_config(cfg):
    """Add the method-owned node ``MODEL.IOU_BALANCED``; each key carries its paper symbol."""
    cfg.MODEL.IOU_BALANCED = CN()
