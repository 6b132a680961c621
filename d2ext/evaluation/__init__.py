"""Evaluation for every dataset of the project.

- ``COCOEvaluatorWithIoUThresholds``: COCO AP plus AP50, AP55, ..., AP95 (COCO, shapes, VOC
  COCO-style, Cityscapes boxes).
- ``CrowdHumanEvaluator``: AP50 and the log-average miss rate MR^-2 (CrowdHuman full body).
- ``build_dataset_evaluator``: picks one from the dataset's ``evaluator_type``.
- ``ranking_decomposition``: AP at each IoU threshold as scored, under an oracle ranking, and
  the recall: what the scores and what the boxes lose.
"""
from .build import build_dataset_evaluator
from .coco import COCOEvaluatorWithIoUThresholds, ap_per_iou_threshold
from .crowdhuman import CrowdHumanEvaluator
from .miss_rate import MR_REFERENCE_FPPI, log_average_miss_rate, miss_rate_from_coco_eval
from .ranking import coco_gt_of, ranking_decomposition

__all__ = [
    "COCOEvaluatorWithIoUThresholds",
    "CrowdHumanEvaluator",
    "MR_REFERENCE_FPPI",
    "ap_per_iou_threshold",
    "build_dataset_evaluator",
    "coco_gt_of",
    "log_average_miss_rate",
    "miss_rate_from_coco_eval",
    "ranking_decomposition",
]
