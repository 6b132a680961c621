"""Measurements of the IoU-balanced losses behind the paper's Fig. 3, baseline vs balanced
weights (``tools/diagnose_iou_balanced.py`` runs them and plots the numbers).

- :func:`score_by_iou` (Fig. 3a): average classification score of the detections in each IoU
  bin [0.5, 0.55), ..., [0.95, 1.0].
- :func:`iou_share` (Fig. 3b): the percentage of all detections whose IoU exceeds each
  threshold 0.5, 0.55, ..., 0.95.

The IoU of a detection is its highest IoU with a GT box of its class in its image (0 if none).
"""
import numpy as np
import torch

from d2ext.analysis import best_same_class_iou, gt_boxes_and_classes
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.structures import Boxes

__all__ = ["IOU_BINS", "IOU_THRESHOLDS", "collect_detections", "score_by_iou", "iou_share"]

IOU_BINS = [round(0.5 + 0.05 * i, 2) for i in range(11)]  # edges 0.5 ... 1.0 (Fig. 3a)
IOU_THRESHOLDS = [round(0.5 + 0.05 * i, 2) for i in range(10)]  # 0.5 ... 0.95 (Fig. 3b)


@torch.no_grad()
def collect_detections(cfg, model, dataset, num_images=None):
    """Run ``model`` (eval mode) on the first ``num_images`` images of ``dataset`` (all if
    None), read with detectron2's test-time ``DatasetMapper(cfg)``.

    Returns:
        (ndarray, ndarray): the score and the IoU (best same-class GT) of every detection.
    """
    mapper = DatasetMapper(cfg, is_train=False)
    scores, ious = [], []
    for record in DatasetCatalog.get(dataset)[:num_images]:
        inst = model([mapper(dict(record))])[0]["instances"].to("cpu")
        gt_boxes, gt_classes = gt_boxes_and_classes(record)
        best = best_same_class_iou(inst.pred_boxes, inst.pred_classes, Boxes(gt_boxes),
                                   gt_classes)
        scores.append(inst.scores.numpy())
        ious.append(best.numpy())
    return np.concatenate(scores or [np.zeros(0)]), np.concatenate(ious or [np.zeros(0)])


def score_by_iou(scores, ious, edges=IOU_BINS):
    """Fig. 3a: mean score and count of the detections in each IoU bin [e_k, e_k+1) (the last
    bin includes 1.0); the mean is None for an empty bin."""
    rows = []
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = k == len(edges) - 2
        sel = (ious >= lo) & ((ious <= hi) if last else (ious < hi))
        rows.append({"iou_lo": lo, "iou_hi": hi, "count": int(sel.sum()),
                     "mean_score": float(scores[sel].mean()) if sel.any() else None})
    return rows


def iou_share(ious, thresholds=IOU_THRESHOLDS):
    """Fig. 3b: percentage of all detections whose IoU exceeds each threshold."""
    n = max(len(ious), 1)
    return [{"threshold": t, "percent": 100.0 * float((ious > t).sum()) / n}
            for t in thresholds]
