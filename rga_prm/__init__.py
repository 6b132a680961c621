"""R-CNN Gradient Annealing and Parallel R-CNN Modules (Ge et al.)."""
from .config import add_rga_prm_config

__all__ = ["add_rga_prm_config"]
