"""Merging a YAML file and ``KEY VALUE`` opts into a config, with the checks every program of
the project wants. Which method nodes the config holds is the caller's business: the project's
assembly of every method is ``train_net.add_all_configs`` / ``train_net.load_config``."""
import logging
import os

import torch

__all__ = ["merge_config_file", "check_num_classes"]


def merge_config_file(cfg, config_file, opts=()):
    """Merge ``config_file`` and ``opts`` into ``cfg`` (mutated and returned, unfrozen).

    A missing file raises FileNotFoundError naming it; unknown keys raise yacs' KeyError
    ("Non-existent config key"). ``MODEL.DEVICE`` falls back to ``cpu`` when CUDA is not
    available. :func:`check_num_classes` refuses a class count below 1.
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("CUDA is not available: MODEL.DEVICE set to cpu")
        cfg.MODEL.DEVICE = "cpu"
    check_num_classes(cfg)
    return cfg


def check_num_classes(cfg):
    """Refuse (``ValueError`` naming the key) a ``NUM_CLASSES`` below 1 in any node of
    ``cfg.MODEL``: detectron2's ``ROI_HEADS`` and ``RETINANET`` and the methods' nodes (e.g.
    ``MODEL.PADET``). With 0 classes detectron2's heads build and train without an error, on
    background alone; checked here, when the config is merged, before any model or data work."""
    for name, node in cfg.MODEL.items():
        if isinstance(node, dict) and "NUM_CLASSES" in node and node.NUM_CLASSES < 1:
            raise ValueError(f"MODEL.{name}.NUM_CLASSES = {node.NUM_CLASSES}: need at least 1 "
                             "object class")
