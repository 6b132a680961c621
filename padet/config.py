"""Config of PADet (PosNeg-balanced anchors with aligned features): the ``MODEL.PADET`` node."""
from detectron2.config import CfgNode as CN

__all__ = ["add_padet_config"]


def add_padet_config(cfg):
    """Add the method-owned node ``MODEL.PADET``; each key carries its paper symbol."""
    cfg.MODEL.PADET = CN()
