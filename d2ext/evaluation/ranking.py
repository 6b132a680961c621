"""What a detector's ranking costs its AP: COCO AP at each IoU threshold of its detections as
scored, the same detections under an oracle ranking, and the recall.

The oracle scores each detection by its IoU with the best non-crowd GT box of its class in its
image, so the boxes stay the same and the best-localized come first. Three numbers per IoU
threshold t, from pycocotools' ``COCOeval`` (all areas, the largest ``maxDets``, mean over the
categories with GT, as ``COCOeval.summarize``):

- ``AP``: the detector's AP_t;
- ``AP_oracle``: AP_t under the oracle ranking: what better scores alone could reach;
- ``recall``: the share of GT boxes some detection reaches at IoU t, the ceiling of both.

``AP_oracle - AP`` is what the scores lose at t, ``recall - AP_oracle`` what the boxes lose
(duplicates and misses aside). Two detectors whose AP_t differ by as much as their recall
differs at t differ in where they put their boxes, not in how they score them.
"""
import contextlib
import io

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.data.datasets.coco import convert_to_coco_dict

from .coco import ap_per_iou_threshold, dataset_json_file, load_coco_results, per_iou_threshold

__all__ = ["coco_gt_of", "oracle_scored", "recall_per_iou_threshold", "ranking_decomposition"]


def coco_gt_of(dataset_name):
    """The pycocotools ``COCO`` ground truth that detectron2's ``COCOEvaluator`` evaluates a
    registered dataset against: its ``json_file`` (:func:`~.coco.dataset_json_file`), or the
    dataset converted to COCO format."""
    json_file = dataset_json_file(dataset_name)
    with contextlib.redirect_stdout(io.StringIO()):
        if json_file:
            return COCO(json_file)
        coco = COCO()
        coco.dataset = convert_to_coco_dict(dataset_name)
        coco.createIndex()
    return coco


def oracle_scored(coco_gt, coco_results):
    """Copies of the COCO-format detections, each scored by its IoU with the best non-crowd GT
    box of its category in its image (0 when there is none)."""
    out = []
    for d in coco_results:
        ann_ids = coco_gt.getAnnIds(imgIds=[d["image_id"]], catIds=[d["category_id"]],
                                    iscrowd=False)
        gt = [a["bbox"] for a in coco_gt.loadAnns(ann_ids)]
        iou = mask_util.iou([d["bbox"]], gt, [0] * len(gt)) if gt else np.zeros((1, 0))
        out.append({**d, "score": float(iou.max()) if iou.size else 0.0})
    return out


def recall_per_iou_threshold(coco_eval):
    """``{"AP50": recall, ...}`` in percent (keyed like :func:`ap_per_iou_threshold`) from an
    evaluated COCOeval: all areas, the largest maxDets, mean over categories with GT."""
    return per_iou_threshold(coco_eval, "recall")


def _evaluate(coco_gt, coco_results):
    coco_eval = COCOeval(coco_gt, load_coco_results(coco_gt, coco_results), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def ranking_decomposition(coco_gt, coco_results):
    """``{"detections", "AP", "AP_oracle", "recall"}``, the last three keyed by threshold
    (``"AP50"`` ... ``"AP95"``), of COCO-format detections against ``coco_gt`` (a pycocotools
    ``COCO``); see the module docstring."""
    scored = _evaluate(coco_gt, coco_results)
    oracle = _evaluate(coco_gt, oracle_scored(coco_gt, coco_results))
    return {"detections": len(coco_results), "AP": ap_per_iou_threshold(scored),
            "AP_oracle": ap_per_iou_threshold(oracle),
            "recall": recall_per_iou_threshold(scored)}
