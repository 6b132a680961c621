"""Config of R-CNN Gradient Annealing (``MODEL.RGA``) and Parallel R-CNN Modules (``MODEL.PRM``)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_rga_prm_config"]


def add_rga_prm_config(cfg):
    """Add the method-owned nodes ``MODEL.RGA`` and ``MODEL.PRM``; keys carry paper symbols."""
    cfg.MODEL.RGA = CN()
    cfg.MODEL.PRM = CN()
