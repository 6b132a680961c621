"""Shared infrastructure of the project, below every method package (it imports none of them):
the datasets (the embedded shapes and primitives splits, PASCAL VOC COCO-style, CrowdHuman,
Cityscapes boxes; registered on import), their evaluation (COCO AP at every IoU threshold,
CrowdHuman MR^-2), config merging, and the helpers of the programs in ``tools/``
(``d2ext.tooling``, ``d2ext.benchmark``)."""
from . import datasets as _datasets  # noqa: F401  (registration)
from .config import merge_config_file
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
    "build_dataset_evaluator",
    "merge_config_file",
]
