"""R-CNN Gradient Annealing and Parallel R-CNN Modules (Ge et al.)."""
from .config import add_rga_prm_config
from .gradient_annealing import GradientAnnealingHook
from . import parallel_iou_uniform_roi_heads as _  # noqa: F401  (registration)
from . import parallel_roi_heads as _  # noqa: F401,F811  (registration)

__all__ = ["add_rga_prm_config", "GradientAnnealingHook"]
