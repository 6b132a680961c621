#!/usr/bin/env python
"""Train and evaluate every detector of this project with one script (detectron2 YAML style).

    python train_net.py --config-file configs/shapes/faster_rcnn_R_18_FPN.yaml
    python train_net.py --config-file <cfg> --eval-only MODEL.WEIGHTS <output>/model_final.pth
    python train_net.py --config-file <cfg> --resume          # continue an interrupted run
    python train_net.py --config-file <cfg> --num-gpus 8 SOLVER.IMS_PER_BATCH 16
"""
import json
import logging
import os

import torch

import iou_uniform
import padet
import projects.iou_balanced
import rga_prm
from d2ext import build_dataset_evaluator, merge_config_file, solver
from d2ext.atomic import write_text_atomically
from d2ext.checkpoint import MIN_LOADED_FRACTION, ProjectCheckpointer
from d2ext.collapse_check import CollapseCheckHook, add_collapse_check_config
from d2ext.run_state import (
    MetricsJSONWriter,
    ResumableSampler,
    RNGCheckpoint,
    SamplerCheckpoint,
    WriteMetricsBeforeCheckpoint,
    build_resumable_train_loader,
    check_fresh_output_dir,
    default_setup,
    preserved_rng_states,
    restart_data_loader_iter,
)
from d2ext.data import CheckedDatasetMapper, DataErrorCheckpointHook
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, hooks, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, TensorboardXWriter
from padet.dataset_mapper import PADetDatasetMapper

__all__ = ["add_all_configs", "load_config", "method_hooks", "Trainer", "setup", "main", "cli"]

logger = logging.getLogger("detectron2")

# detectron2 main's DefaultTrainer checkpoints its SimpleTrainer (hence the optimizer and the
# AMP grad scaler); 0.6 does not.
TRAINER_CHECKPOINTS_OPTIMIZER = "state_dict" in DefaultTrainer.__dict__


def add_all_configs(cfg):
    """Add every method's config node (MODEL.IOU_UNIFORM, RGA, PRM, PADET, IOU_BALANCED, and
    PADet's INPUT.PADET) and the trainer's COLLAPSE_CHECK (d2ext.collapse_check)."""
    add_collapse_check_config(cfg)
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


def method_hooks(cfg):
    """The methods' training hooks of a config, first among the trainer's hooks: R-CNN Gradient
    Annealing when ``MODEL.RGA.ENABLED``."""
    return [rga_prm.GradientAnnealingHook.from_config(cfg)] if cfg.MODEL.RGA.ENABLED else []


def check_weights_file(path):
    """Raise a clear error for a missing local weights file (URLs are left to fvcore)."""
    if path and "://" not in path and not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.WEIGHTS file not found: {path}")


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with COCO evaluation at every IoU threshold and full checkpoints.

    Checkpoints hold the model, optimizer, LR scheduler, iteration, the position of the
    training sampler and the RNG states (``d2ext.run_state``), so ``--resume`` continues exactly
    where an interrupted run stopped. A fresh run refuses an ``OUTPUT_DIR`` that already holds
    another run's checkpoints rather than overwrite them.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        # MODEL.WEIGHTS initialises training: ImageNet weights fill the backbone only
        ProjectCheckpointer.replace_in(self, min_loaded_fraction=0.0)
        checkpointables = self.checkpointer.checkpointables
        if not TRAINER_CHECKPOINTS_OPTIMIZER:
            checkpointables["optimizer"] = self._trainer.optimizer
            if cfg.SOLVER.AMP.ENABLED:
                checkpointables["grad_scaler"] = self._trainer.grad_scaler
        sampler = getattr(self._trainer.data_loader, "sampler", None)
        if isinstance(sampler, ResumableSampler):
            checkpointables["train_sampler"] = SamplerCheckpoint(
                sampler, self, cfg.SOLVER.IMS_PER_BATCH)
        else:  # a subclass's own loader: --resume restarts its data stream
            logger.warning("the train loader has no d2ext.run_state.ResumableSampler: its "
                           "position is not checkpointed")
        checkpointables["rng"] = RNGCheckpoint()

    def resume_or_load(self, resume=True):
        if not (resume and self.checkpointer.has_checkpoint()):
            if self.checkpointer.has_checkpoint():
                raise FileExistsError(
                    f"OUTPUT_DIR {self.cfg.OUTPUT_DIR} already holds a training run "
                    "(last_checkpoint): pass --resume to continue it, or set another OUTPUT_DIR"
                )
            check_weights_file(self.cfg.MODEL.WEIGHTS)
        super().resume_or_load(resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            # the restored sampler position reaches the data loader (and its workers) through a
            # new iterator; making one draws a seed from torch's RNG, which must stay restored
            with preserved_rng_states():
                restart_data_loader_iter(self._trainer)

    def build_hooks(self):
        """detectron2's hooks, plus R-CNN Gradient Annealing when ``MODEL.RGA.ENABLED``,
        ``metrics.json`` written before each checkpoint (``WriteMetricsBeforeCheckpoint``), a
        checkpoint when training stops on an unreadable image (d2ext.data) and, when
        ``COLLAPSE_CHECK.ENABLED``, the stop of a run whose loss has stopped moving
        (d2ext.collapse_check; last, so that an iteration's checkpoint and metrics come first).
        """
        ret = method_hooks(self.cfg) + super().build_hooks()
        if comm.is_main_process():  # where detectron2 adds the writers
            checkpoint = next(i for i, h in enumerate(ret)
                              if isinstance(h, hooks.PeriodicCheckpointer))
            ret.insert(checkpoint, WriteMetricsBeforeCheckpoint(
                self.metrics_writer, self.cfg.SOLVER.CHECKPOINT_PERIOD))
        ret.append(DataErrorCheckpointHook())
        if self.cfg.COLLAPSE_CHECK.ENABLED and comm.is_main_process():  # where the losses are
            ret.append(CollapseCheckHook.from_config(self.cfg))
        return ret

    def build_writers(self):
        """detectron2's writers (``default_writers``) with ``metrics.json`` written by
        ``d2ext.run_state.MetricsJSONWriter``, kept as ``self.metrics_writer``."""
        self.metrics_writer = MetricsJSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))
        return [CommonMetricPrinter(self.max_iter), self.metrics_writer,
                TensorboardXWriter(self.cfg.OUTPUT_DIR)]

    @classmethod
    def build_optimizer(cls, cfg, model):
        """detectron2's optimizer, plus ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model"``: one
        global gradient norm clipped at ``CLIP_VALUE`` (``d2ext.solver``)."""
        return solver.build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        """detectron2's train loader over a resumable sampler (``d2ext.run_state``), with mappers
        that name unreadable files and drop inverted boxes (``d2ext.data``); PADet configs use
        the PADet mapper (SSD augmentations with boxes, square inputs)."""
        if cfg.MODEL.META_ARCHITECTURE == "PADet":
            return build_resumable_train_loader(cfg, PADetDatasetMapper(cfg, True))
        return build_resumable_train_loader(cfg, CheckedDatasetMapper(cfg, True))

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

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """detectron2's evaluation, drawing nothing from the training RNG streams (so that a
        resumed run, which does not repeat the evaluation at its checkpoint, draws the same)."""
        with preserved_rng_states():
            return super().test(cfg, model, evaluators)


def setup(args):
    """get_cfg + every method node, merged with the file and trailing opts; default_setup.

    A training run without ``--resume`` first refuses an ``OUTPUT_DIR`` that holds a run, on
    every process, before anything is written there. ``config.yaml`` is written atomically; an
    ``--eval-only`` run leaves an existing one (a training run's) as it is.
    """
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    if not (args.resume or args.eval_only):
        check_fresh_output_dir(cfg.OUTPUT_DIR)
        comm.synchronize()  # no process writes before every process has checked
    config_yaml = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
    default_setup(cfg, args, write_config=not (args.eval_only and os.path.exists(config_yaml)))
    return cfg


def write_results(cfg, results):
    """The final evaluation as ``OUTPUT_DIR/inference/results.json`` (what ``tools/ablate.py``
    reads), written atomically by the main process; replaced by the next evaluation."""
    if results and comm.is_main_process():
        path = os.path.join(cfg.OUTPUT_DIR, "inference", "results.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_text_atomically(path, json.dumps(results, indent=1))


def main(args):
    cfg = setup(args)
    if args.eval_only:
        if not cfg.MODEL.WEIGHTS:
            raise ValueError("--eval-only needs the weights to evaluate: MODEL.WEIGHTS <file>")
        check_weights_file(cfg.MODEL.WEIGHTS)
        model = Trainer.build_model(cfg)
        # detectron2's own argument parser has no --min-loaded-fraction
        fraction = getattr(args, "min_loaded_fraction", MIN_LOADED_FRACTION)
        ProjectCheckpointer(model, save_dir=cfg.OUTPUT_DIR, min_loaded_fraction=fraction
                            ).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        write_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    # DefaultTrainer.train returns the final evaluation only with TEST.EXPECTED_RESULTS set
    results = getattr(trainer, "_last_eval_results", None)
    write_results(cfg, results)
    return results


def cli(argv=None):
    parser = default_argument_parser()
    parser.add_argument("--min-loaded-fraction", type=float, default=MIN_LOADED_FRACTION,
                        help="--eval-only: least fraction of the model's parameter tensors "
                             "MODEL.WEIGHTS must fill (default %(default)s; 0: any)")
    args = parser.parse_args(argv)
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
