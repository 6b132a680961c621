"""COCO evaluation that also reports AP at every IoU threshold 0.50, 0.55, ..., 0.95.

The papers report AP60/AP70/AP80/AP90 beside COCO's AP/AP50/AP75; COCOeval already computes
the precision at every threshold, so these are read from the same evaluation.
"""
import contextlib
import io
import os

from pycocotools.coco import COCO

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.logger import create_small_table

__all__ = ["COCOEvaluatorWithIoUThresholds", "ap_per_iou_threshold", "per_iou_threshold",
           "load_coco_results", "dataset_json_file"]


def dataset_json_file(dataset_name):
    """A registered dataset's ``json_file`` (None when it has none), which COCO evaluation reads
    as the ground truth. A dataset that writes its files on first use (the synthetic shapes and
    primitives sets) is loaded once first when the file is not there yet, as a test loader
    would load it."""
    json_file = MetadataCatalog.get(dataset_name).get("json_file")
    if json_file and not os.path.isfile(json_file):
        DatasetCatalog.get(dataset_name)
    return json_file


def load_coco_results(coco_gt, coco_results):
    """``coco_gt.loadRes`` that also accepts an empty result list (no detection at all)."""
    if coco_results:
        return coco_gt.loadRes(coco_results)
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": list(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt.createIndex()
    return coco_dt


def per_iou_threshold(coco_eval, key="precision"):
    """``{"AP50": ..., "AP55": ..., ..., "AP95": ...}`` in percent from an evaluated COCOeval:
    its ``precision`` (AP) or ``recall`` at each IoU threshold.

    Same reduction as COCOeval.summarize: all areas, the largest maxDets, mean over recall
    points (precision) and categories with ground truth.
    """
    values = coco_eval.eval[key]  # precision (T, R, K, A, M), recall (T, K, A, M)
    area_all = list(coco_eval.params.areaRngLbl).index("all")
    results = {}
    for t, thr in enumerate(coco_eval.params.iouThrs):
        v = values[t, ..., area_all, -1]
        v = v[v > -1]
        results[f"AP{int(round(thr * 100))}"] = float(v.mean() * 100) if v.size else float("nan")
    return results


def ap_per_iou_threshold(coco_eval):
    """AP at each IoU threshold (:func:`per_iou_threshold` of the precision)."""
    return per_iou_threshold(coco_eval, "precision")


class COCOEvaluatorWithIoUThresholds(COCOEvaluator):
    """detectron2's ``COCOEvaluator`` whose box results add AP at each IoU threshold."""

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        if iou_type != "bbox":
            return results
        if coco_eval is None:
            per_threshold = {f"AP{t}": float("nan") for t in range(50, 100, 5)}
        else:
            per_threshold = ap_per_iou_threshold(coco_eval)
        self._logger.info("AP per IoU threshold (bbox):\n" + create_small_table(per_threshold))
        results.update(per_threshold)
        return results
