#!/usr/bin/env python
"""Train and evaluate every detector of this project with one script (detectron2 YAML style).

    python train_net.py --config-file configs/shapes/faster_rcnn_R_18_FPN.yaml
    python train_net.py --config-file <cfg> --eval-only MODEL.WEIGHTS <output>/model_final.pth
    python train_net.py --config-file <cfg> --resume          # continue an interrupted run
    python train_net.py --config-file <cfg> --num-gpus 8 SOLVER.IMS_PER_BATCH 16
"""
import logging
import os

import torch

import iou_uniform
import padet
import projects.iou_balanced
import rga_prm
from d2ext import build_dataset_evaluator, merge_config_file
from d2ext.data import CheckedDatasetMapper, DataErrorCheckpointHook
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from padet.dataset_mapper import PADetDatasetMapper

__all__ = ["add_all_configs", "load_config", "Trainer", "setup", "main", "cli"]

logger = logging.getLogger("detectron2")

# detectron2 main's DefaultTrainer checkpoints its SimpleTrainer (hence the optimizer);
# 0.6 does not.
TRAINER_CHECKPOINTS_OPTIMIZER = "state_dict" in DefaultTrainer.__dict__


def add_all_configs(cfg):
    """Add every method's config node (MODEL.IOU_UNIFORM, RGA, PRM, PADET, IOU_BALANCED, and
    PADet's INPUT.PADET)."""
    iou_uniform.add_iou_uniform_config(cfg)
    rga_prm.add_rga_prm_config(cfg)
    padet.add_padet_config(cfg)
    projects.iou_balanced.add_iou_balanced_config(cfg)
    return cfg


def load_config(config_file, opts=()):
    """``get_cfg()`` + every method node, merged with a YAML file and ``KEY VALUE`` opts.

    Unknown keys raise (yacs' "Non-existent config key"). ``MODEL.DEVICE`` falls back to
    ``cpu`` when CUDA is not available. The config is returned unfrozen.
    """
    return merge_config_file(add_all_configs(get_cfg()), config_file, opts)


def check_weights_file(path):
    """Raise a clear error for a missing local weights file (URLs are left to fvcore)."""
    if path and "://" not in path and not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.WEIGHTS file not found: {path}")


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with COCO evaluation at every IoU threshold and full checkpoints.

    Checkpoints hold the model, optimizer, LR scheduler and iteration, so ``--resume`` continues
    exactly where an interrupted run stopped. A fresh run refuses an ``OUTPUT_DIR`` that
    already holds another run's checkpoints rather than overwrite them.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        if not TRAINER_CHECKPOINTS_OPTIMIZER:
            self.checkpointer.checkpointables["optimizer"] = self._trainer.optimizer

    def resume_or_load(self, resume=True):
        if not (resume and self.checkpointer.has_checkpoint()):
            if self.checkpointer.has_checkpoint():
                raise FileExistsError(
                    f"OUTPUT_DIR {self.cfg.OUTPUT_DIR} already holds a training run "
                    "(last_checkpoint): pass --resume to continue it, or set another OUTPUT_DIR"
                )
            check_weights_file(self.cfg.MODEL.WEIGHTS)
        super().resume_or_load(resume=resume)

    def build_hooks(self):
        """detectron2's hooks, plus R-CNN Gradient Annealing when ``MODEL.RGA.ENABLED`` and a
        checkpoint when training stops on an unreadable image (d2ext.data)."""
        ret = super().build_hooks()
        if self.cfg.MODEL.RGA.ENABLED:
            ret.insert(0, rga_prm.GradientAnnealingHook.from_config(self.cfg))
        ret.append(DataErrorCheckpointHook())
        return ret

    @classmethod
    def build_train_loader(cls, cfg):
        """Mappers that name unreadable files and drop inverted boxes (d2ext.data)."""
        if cfg.MODEL.META_ARCHITECTURE == "PADet":  # SSD augmentations with boxes, square inputs
            return build_detection_train_loader(cfg, mapper=PADetDatasetMapper(cfg, True))
        return build_detection_train_loader(cfg, mapper=CheckedDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        names = (dataset_name,)
        if cfg.MODEL.META_ARCHITECTURE == "PADet":  # square resize to MODEL.PADET.INPUT_SIZE
            mapper = PADetDatasetMapper(cfg, False, dataset_names=names)
        else:
            mapper = CheckedDatasetMapper(cfg, False, dataset_names=names)
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """The dataset's evaluator by its ``evaluator_type`` (d2ext.build_dataset_evaluator)."""
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_dataset_evaluator(cfg, dataset_name, output_folder)


def setup(args):
    """get_cfg + every method node, merged with the file and trailing opts; default_setup."""
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        if not cfg.MODEL.WEIGHTS:
            raise ValueError("--eval-only needs the weights to evaluate: MODEL.WEIGHTS <file>")
        check_weights_file(cfg.MODEL.WEIGHTS)
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    if args.num_gpus > 1 and not torch.cuda.is_available():
        raise SystemExit("--num-gpus > 1 needs CUDA GPUs; none is available")
    logger.info("Command Line Args: %s", args)
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    cli()
