"""CrowdHuman evaluation: AP50 and log-average miss rate MR^-2 (RGA/PRM Table 7).

Both come from one pycocotools ``COCOeval`` run at the single IoU threshold 0.5, area range
"all" and ``max_dets_per_image`` detections per image; ignore regions are the dataset's
``iscrowd=1`` boxes (see ``d2ext.evaluation.miss_rate`` for the protocol). AP50 is COCO's
101-point interpolated precision; CrowdHuman's script integrates the raw precision-recall
curve with the trapezoid rule, which differs by a fraction of a point.
"""
import contextlib
import io
import itertools
import json
import os

import numpy as np
from pycocotools.cocoeval import COCOeval

from detectron2.evaluation import COCOEvaluator
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from .coco import load_coco_results
from .miss_rate import miss_rate_from_coco_eval

__all__ = ["CrowdHumanEvaluator", "evaluate_boxes_at_iou"]


def evaluate_boxes_at_iou(coco_gt, coco_results, iou_threshold=0.5, max_dets=300, img_ids=None):
    """An evaluated and accumulated box ``COCOeval`` at one IoU threshold, area "all"."""
    coco_dt = load_coco_results(coco_gt, coco_results)
    coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
    coco_eval.params.iouThrs = np.array([iou_threshold])
    coco_eval.params.areaRng = [[0.0, float("inf")]]
    coco_eval.params.areaRngLbl = ["all"]
    coco_eval.params.maxDets = [int(max_dets)]
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


class CrowdHumanEvaluator(COCOEvaluator):
    """AP50 and MR^-2 (``"mMR"``, percent, lower is better) for a CrowdHuman-style dataset.

    Inherits detectron2's ``COCOEvaluator`` for collecting predictions across processes, the
    conversion of the dataset to COCO json (ignore regions as ``iscrowd``) and the saved
    ``coco_instances_results.json``; only the evaluation itself differs.
    """

    def __init__(self, dataset_name, output_dir=None, *, max_dets_per_image=300,
                 distributed=True):
        super().__init__(dataset_name, tasks=("bbox",), distributed=distributed,
                         output_dir=output_dir, use_fast_impl=False)
        self._max_dets = int(max_dets_per_image)

    def _eval_predictions(self, predictions, img_ids=None):
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        mapping = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if mapping:
            reverse = {v: k for k, v in mapping.items()}
            for result in coco_results:
                result["category_id"] = reverse[result["category_id"]]
        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(coco_results))
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        coco_eval = evaluate_boxes_at_iou(
            self._coco_api, coco_results, 0.5, self._max_dets, img_ids=img_ids
        )
        self._results["bbox"] = self._derive_crowdhuman_results(coco_eval)

    def _derive_crowdhuman_results(self, coco_eval):
        precision = coco_eval.eval["precision"][0, :, :, 0, 0]  # (R, K)
        miss_rates = miss_rate_from_coco_eval(coco_eval, 0.5)
        class_names = self._metadata.get("thing_classes")
        ap50, per_class = [], {}
        for k, cat_id in enumerate(coco_eval.params.catIds):
            p = precision[:, k]
            if p.size and (p > -1).all():
                ap50.append(float(p.mean() * 100))
            name = class_names[k] if class_names and k < len(class_names) else str(cat_id)
            per_class[f"mMR-{name}"] = miss_rates[cat_id] * 100
        mr = [m for m in miss_rates.values() if np.isfinite(m)]
        results = {
            "AP50": float(np.mean(ap50)) if ap50 else float("nan"),
            "mMR": float(np.mean(mr) * 100) if mr else float("nan"),
        }
        if len(per_class) > 1:
            results.update(per_class)
        self._logger.info(
            f"CrowdHuman evaluation (IoU 0.5, at most {self._max_dets} detections per image, "
            "MR^-2 over FPPI 1e-2..1e0):\n" + create_small_table(results)
        )
        return results
