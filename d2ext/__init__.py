"""Shared infrastructure of the project: config loading, the embedded shapes dataset
(registered as ``shapes_train`` / ``shapes_val`` on import) and COCO evaluation."""
from . import shapes_dataset as _  # registration
from .config import add_all_configs, load_config
from .evaluation import COCOEvaluatorWithIoUThresholds

__all__ = ["add_all_configs", "load_config", "COCOEvaluatorWithIoUThresholds"]
