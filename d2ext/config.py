"""The project's config: detectron2's defaults plus every method's node."""
import logging
import os

import torch

from detectron2.config import get_cfg

from iou_uniform.config import add_iou_uniform_config
from padet.config import add_padet_config
from projects.iou_balanced.config import add_iou_balanced_config
from rga_prm.config import add_rga_prm_config

__all__ = ["add_all_configs", "load_config"]


def add_all_configs(cfg):
    """Add every method's config node (MODEL.IOU_UNIFORM, RGA, PRM, PADET, IOU_BALANCED, and
    PADet's INPUT.PADET)."""
    add_iou_uniform_config(cfg)
    add_rga_prm_config(cfg)
    add_padet_config(cfg)
    add_iou_balanced_config(cfg)
    return cfg


def load_config(config_file, opts=()):
    """``get_cfg()`` + every method node, merged with a YAML file and ``KEY VALUE`` opts.

    Unknown keys raise (yacs' "Non-existent config key"). ``MODEL.DEVICE`` falls back to
    ``cpu`` when CUDA is not available. The config is returned unfrozen.
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    cfg = add_all_configs(get_cfg())
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("CUDA is not available: MODEL.DEVICE set to cpu")
        cfg.MODEL.DEVICE = "cpu"
    return cfg
