"""The project's optimizer: detectron2's ``build_optimizer`` plus whole-model gradient clipping.

``SOLVER.CLIP_GRADIENTS.CLIP_TYPE: "full_model"`` clips one global norm (``NORM_TYPE``) over the
gradients of every parameter the optimizer holds at ``CLIP_VALUE``, as
``torch.nn.utils.clip_grad_norm_`` and mmdetection's ``optimizer_config.grad_clip`` do (the
recipes of IoU-uniform and RGA/PRM: ``max_norm=35, norm_type=2``). detectron2's ``"norm"`` clips
each parameter tensor's gradient separately. The value name is the one DETR's detectron2 wrapper
uses. Other clip types, and no clipping, are detectron2's ``build_optimizer`` unchanged.

The clip runs at the start of ``optimizer.step()``: after the whole backward pass (so after
RGA's gradient hooks have scaled the R-CNN gradients and after DDP's all-reduce) and, with AMP,
after ``GradScaler.step`` has unscaled the gradients (it calls ``optimizer.step`` only then, and
skips it when a gradient is inf/NaN). The norm before clipping is logged as ``grad_norm``.
"""
import torch

from detectron2.solver import build_optimizer as build_detectron2_optimizer
from detectron2.utils.events import get_event_storage

__all__ = ["FULL_MODEL", "build_optimizer", "with_full_model_clipping"]

FULL_MODEL = "full_model"


def build_optimizer(cfg, model):
    """detectron2's optimizer for ``model``; with ``SOLVER.CLIP_GRADIENTS.ENABLED`` and
    ``CLIP_TYPE "full_model"``, one whose ``step()`` first clips the global gradient norm.

    Raises ``ValueError`` naming the key for a ``CLIP_VALUE`` that is not > 0 (``.inf`` logs the
    norm and never clips) or a ``NORM_TYPE`` that is not a p > 0 (``.inf``: the largest absolute
    value).
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not (clip.ENABLED and clip.CLIP_TYPE == FULL_MODEL):
        return build_detectron2_optimizer(cfg, model)
    max_norm, norm_type = float(clip.CLIP_VALUE), float(clip.NORM_TYPE)
    if not max_norm > 0:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE = {clip.CLIP_VALUE}: the "
                         f"{FULL_MODEL} clip needs a gradient norm > 0 (e.g. 35.0)")
    if not norm_type > 0:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.NORM_TYPE = {clip.NORM_TYPE}: the {FULL_MODEL} "
                         "clip needs a p-norm with p > 0 (2.0: L2; .inf: largest absolute value)")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False  # detectron2 refuses the clip type it lacks
    optimizer = build_detectron2_optimizer(cfg, model)
    optimizer.__class__ = with_full_model_clipping(type(optimizer), max_norm, norm_type)
    return optimizer


def with_full_model_clipping(optimizer_type, max_norm, norm_type=2.0):
    """A subclass of ``optimizer_type`` whose ``step()`` first clips the ``norm_type`` norm of
    the gradients of all its param groups' parameters, together, at ``max_norm``, and puts the
    norm before clipping in the current ``EventStorage`` (if any) as ``grad_norm``."""

    def step(self, *args, **kwargs):
        params = [p for group in self.param_groups for p in group["params"]]
        total_norm = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
        storage = _current_event_storage()
        if storage is not None:
            storage.put_scalar("grad_norm", float(total_norm))
        return super(clipping_type, self).step(*args, **kwargs)

    clipping_type = type(optimizer_type.__name__ + "WithFullModelGradientClip",
                         (optimizer_type,), {"step": step})
    return clipping_type


def _current_event_storage():
    """The active ``EventStorage``, or None (detectron2 0.6 has no ``has_event_storage``)."""
    try:
        return get_event_storage()
    except AssertionError:
        return None
