"""R-CNN Gradient Annealing (RGA, paper Eq. 1 and appendix B) as a detectron2 training hook.

The gradients of the R-CNN module's parameters (every box head and box predictor, in every
cascade stage and every parallel module) are multiplied by

    lambda_t = lambda_0 - (lambda_0 - 1) * t / T

before the optimizer step. Tensor gradient hooks scale each parameter's own gradient as it is
computed, before it is accumulated into ``.grad`` and before DDP reduces it, so the gradient
the R-CNN loss sends into the RoI features, FPN and backbone is untouched, weight decay (added
inside ``optimizer.step``) is not scaled, and the hook works on detectron2 v0.6, which has no
``after_backward`` hook, as on main.
"""
import logging

from torch.nn.parallel import DistributedDataParallel

from detectron2.engine import HookBase
from detectron2.utils.events import get_event_storage

__all__ = ["GradientAnnealingHook", "rga_lambda", "rga_modules", "rga_parameters"]

logger = logging.getLogger(__name__)

# ROIHeads children that are not part of the R-CNN box module ("layers from RoI alignment to
# the final classification and regression", Sec. 1).
NON_BOX_PREFIXES = ("mask_", "keypoint_")


def rga_lambda(iteration, max_iter, lambda0=7.0, anneal=True):
    """Eq. 1: lambda_t = lambda_0 - (lambda_0 - 1) * t / T (t 0-based, T = SOLVER.MAX_ITER)."""
    if lambda0 < 1:
        raise ValueError(f"MODEL.RGA.LAMBDA0 must be >= 1, got {lambda0}")
    if max_iter <= 0 or not 0 <= iteration < max_iter:
        raise ValueError(f"RGA needs 0 <= t < T, got t={iteration}, T={max_iter}")
    if not anneal:
        return float(lambda0)
    return lambda0 - (lambda0 - 1.0) * iteration / max_iter


def _unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def rga_modules(model):
    """The R-CNN box modules whose parameters RGA scales.

    ``model.roi_heads.rga_modules()`` when the ROI heads define it; otherwise every child of
    ``model.roi_heads`` except the mask and keypoint branches. For detectron2's Standard and
    Cascade ROI heads that is ``box_head`` and ``box_predictor`` (ModuleLists over cascade
    stages); for this project's heads it also covers parallel modules and extra towers.
    """
    model = _unwrap(model)
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is None:
        raise ValueError(f"RGA needs a two-stage model with roi_heads; got {type(model).__name__}")
    if hasattr(roi_heads, "rga_modules"):
        return list(roi_heads.rga_modules())
    return [m for name, m in roi_heads.named_children() if not name.startswith(NON_BOX_PREFIXES)]


def rga_parameters(model):
    """Trainable parameters of :func:`rga_modules`; raises if there are none or if the set
    overlaps the backbone or the proposal generator."""
    params, seen = [], set()
    for module in rga_modules(model):
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    if not params:
        raise ValueError("RGA is enabled but the ROI heads have no trainable R-CNN parameters")
    for name in ("backbone", "proposal_generator"):
        part = getattr(_unwrap(model), name, None)
        if part is not None and any(id(p) in seen for p in part.parameters()):
            raise ValueError(f"RGA parameter selection overlaps model.{name}")
    return params


class GradientAnnealingHook(HookBase):
    """Scales the R-CNN parameter gradients by lambda_t (Eq. 1); logs ``rga/lambda``."""

    def __init__(self, lambda0=7.0, anneal=True):
        if lambda0 < 1:
            raise ValueError(f"MODEL.RGA.LAMBDA0 must be >= 1, got {lambda0}")
        self.lambda0, self.anneal = float(lambda0), anneal
        self.current_lambda = float(lambda0)
        self._handles = []

    @classmethod
    def from_config(cls, cfg):
        return cls(lambda0=cfg.MODEL.RGA.LAMBDA0, anneal=cfg.MODEL.RGA.ANNEAL)

    def _scale(self, grad):
        return grad * self.current_lambda

    def before_train(self):
        params = rga_parameters(self.trainer.model)
        self._handles = [p.register_hook(self._scale) for p in params]
        logger.info(
            "RGA: scaling the gradients of %d R-CNN parameter tensors (%d values), lambda_0=%g%s",
            len(params), sum(p.numel() for p in params), self.lambda0,
            ", annealed to 1" if self.anneal else " (constant)",
        )

    def before_step(self):
        self.current_lambda = rga_lambda(
            self.trainer.iter, self.trainer.max_iter, self.lambda0, self.anneal
        )
        get_event_storage().put_scalar("rga/lambda", self.current_lambda, smoothing_hint=False)

    def after_train(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []
