"""Log-average miss rate MR^-2, the Caltech / CrowdHuman pedestrian metric.

Protocol (Dollar et al., "Pedestrian Detection: An Evaluation of the State of the Art",
PAMI 2012, Caltech toolbox ``bbGt``/``dbEval``; CrowdHuman, Shao et al. 2018, Sec. 4):

1. **Matching**, per image and class, at IoU 0.5: detections in descending score order; each
   is matched to the unmatched ground truth of highest IoU >= 0.5. Ignore regions (CrowdHuman
   ``mask`` boxes and boxes with ``extra.ignore``; stored as ``iscrowd=1``) come after every
   regular ground truth: a detection is tested against them only when no regular one matched,
   with intersection over the *detection's* area (IoA) >= 0.5, and an ignore region may absorb
   any number of detections. Detections on an ignore region are dropped (neither true nor false
   positives); ignore regions are never misses. This is exactly pycocotools' ``COCOeval``
   matching for ``iscrowd`` ground truth, so the matching is COCOeval's (``evalImgs``).
2. **Curve**: all kept detections of the dataset sorted by score; after each, miss rate
   = 1 - TP / #non-ignored GT and FPPI = FP / #images (all images of the split).
3. **Sampling**: at the nine reference FPPI values 10^linspace(-2, 0, 9) the miss rate of the
   last curve point with FPPI <= reference (1.0 when there is none), as ``bbGt('compRoc')``.
4. **Log-average**: ``exp(mean(log(max(1e-10, mr))))`` as in ``dbEval``; perfect detection gives
   1e-10 (reported as ~0), no detection 1.

CrowdDet's toolkit (the usual CrowdHuman script) samples the *first* point with FPPI >= the
reference instead of the last point with FPPI <= it, and uses IoU > 0.5 rather than >= 0.5;
both differ only at curve steps and exact ties.
"""
import numpy as np

__all__ = ["MR_REFERENCE_FPPI", "log_average_miss_rate", "miss_rate_from_coco_eval"]

MR_REFERENCE_FPPI = np.logspace(-2.0, 0.0, 9)  # 10^-2, 10^-1.75, ..., 10^0
_MIN_MISS_RATE = 1e-10  # dbEval's floor before the log


def log_average_miss_rate(scores, is_tp, num_gt, num_images, reference=MR_REFERENCE_FPPI):
    """MR over ``reference`` FPPI for detections already matched (ignored ones removed).

    Args:
        scores: (D,) detection scores of the whole dataset (one class).
        is_tp: (D,) bool, True for a detection matched to a regular ground truth, False for a
            false positive.
        num_gt: number of non-ignored ground-truth boxes.
        num_images: number of images of the split (the FPPI denominator).
    Returns:
        the log-average miss rate in [1e-10, 1]; NaN when ``num_gt`` is 0.
    """
    if num_gt <= 0:
        return float("nan")
    if num_images <= 0:
        raise ValueError("log_average_miss_rate needs at least one image")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    is_tp = np.asarray(is_tp, dtype=bool).reshape(-1)
    if scores.shape != is_tp.shape:
        raise ValueError(f"scores {scores.shape} and is_tp {is_tp.shape} differ in length")
    order = np.argsort(-scores, kind="mergesort")
    is_tp = is_tp[order]
    fppi = np.cumsum(~is_tp) / num_images
    miss = 1.0 - np.cumsum(is_tp) / num_gt
    # the curve starts at (FPPI -inf, miss rate 1): no detection kept
    fppi = np.concatenate([[-np.inf], fppi])
    miss = np.concatenate([[1.0], miss])
    last_at_or_below = np.searchsorted(fppi, np.asarray(reference), side="right") - 1
    sampled = np.maximum(miss[last_at_or_below], _MIN_MISS_RATE)
    return float(np.exp(np.mean(np.log(sampled))))


def miss_rate_from_coco_eval(coco_eval, iou_threshold=0.5, reference=MR_REFERENCE_FPPI):
    """Per-category MR^-2 from an *evaluated* ``COCOeval`` (``evaluate()`` has run).

    Uses COCOeval's matching at ``iou_threshold`` (which must be one of ``params.iouThrs``),
    the area range "all" and the largest ``maxDets``. Returns ``{category_id: MR}``; NaN for a
    category without non-ignored ground truth.
    """
    params = coco_eval.params
    thresholds = np.asarray(params.iouThrs)
    t = np.flatnonzero(np.isclose(thresholds, iou_threshold))
    if t.size == 0:
        raise ValueError(f"IoU {iou_threshold} not among the evaluated thresholds {thresholds}")
    t = int(t[0])
    area_all = list(params.areaRngLbl).index("all")
    cat_ids = params.catIds if params.useCats else [-1]
    num_images, num_areas = len(params.imgIds), len(params.areaRng)
    results = {}
    for k, cat_id in enumerate(cat_ids):
        start = (k * num_areas + area_all) * num_images
        per_image = [e for e in coco_eval.evalImgs[start:start + num_images] if e is not None]
        scores, is_tp, num_gt = [], [], 0
        for e in per_image:
            kept = ~np.asarray(e["dtIgnore"], dtype=bool)[t]
            matched = np.asarray(e["dtMatches"])[t] > 0
            scores.append(np.asarray(e["dtScores"], dtype=np.float64)[kept])
            is_tp.append(matched[kept])
            num_gt += int(np.count_nonzero(~np.asarray(e["gtIgnore"], dtype=bool)))
        results[cat_id] = log_average_miss_rate(
            np.concatenate(scores) if scores else [],
            np.concatenate(is_tp) if is_tp else [],
            num_gt,
            num_images,
            reference,
        )
    return results
