"""Shared infrastructure of the project: config loading, the datasets (the embedded shapes
splits, PASCAL VOC COCO-style, CrowdHuman, Cityscapes boxes; registered on import) and their
evaluation (COCO AP at every IoU threshold, CrowdHuman MR^-2)."""
from . import datasets as _datasets  # registration
from . import shapes_dataset as _shapes  # registration
from .config import add_all_configs, load_config
from .datasets import DatasetFilesNotFoundError
from .evaluation import (
    COCOEvaluatorWithIoUThresholds,
    CrowdHumanEvaluator,
    build_dataset_evaluator,
)

__all__ = [
    "COCOEvaluatorWithIoUThresholds",
    "CrowdHumanEvaluator",
    "DatasetFilesNotFoundError",
    "add_all_configs",
    "build_dataset_evaluator",
    "load_config",
]
