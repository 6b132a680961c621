"""Merging a YAML file and ``KEY VALUE`` opts into a config, with the checks every program of
the project wants. Which method nodes the config holds is the caller's business: the project's
assembly of every method is ``train_net.add_all_configs`` / ``train_net.load_config``."""
import logging
import os

import torch

__all__ = ["merge_config_file"]


def merge_config_file(cfg, config_file, opts=()):
    """Merge ``config_file`` and ``opts`` into ``cfg`` (mutated and returned, unfrozen).

    A missing file raises FileNotFoundError naming it; unknown keys raise yacs' KeyError
    ("Non-existent config key"). ``MODEL.DEVICE`` falls back to ``cpu`` when CUDA is not
    available.
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("CUDA is not available: MODEL.DEVICE set to cpu")
        cfg.MODEL.DEVICE = "cpu"
    return cfg
