"""Measurements of RGA and PRM behind the paper's figures (``tools/diagnose_rga_prm.py`` runs
them and plots the numbers).

- :func:`positives`: positive RoIs sampled per image over training (paper Fig. 1a), from
  detectron2's ``metrics.json``.
- :func:`accuracy`: training accuracy on positive and on negative RoIs (Fig. 3), e.g. without
  vs with RGA.
- :func:`module_scores` / :func:`scores`: the PRM modules' score distributions and their
  absolute difference on the ensemble's detections (Fig. 6).
"""
import os
import re

import numpy as np
import torch

from d2ext.run_state import read_metrics

__all__ = ["read_metrics", "positives", "accuracy", "module_scores", "scores"]

FG_KEY = re.compile(r"^(.*)roi_head/num_fg_samples(_m\d+)?$")


def _series(metrics, key):
    rows = [(m["iteration"], m[key]) for m in metrics if key in m and "iteration" in m]
    return [r[0] for r in rows], [r[1] for r in rows]


def _labels(paths, labels):
    labels = labels or [os.path.basename(os.path.dirname(os.path.abspath(p))) for p in paths]
    if len(labels) != len(paths):
        raise ValueError(f"--labels needs one label per metrics file ({len(paths)})")
    return labels


def positives(metrics_files, labels=None):
    """Fig. 1(a): positives per image sampled for the R-CNN head(s) over iterations
    (``roi_head/num_fg_samples[_m<k>]``, medians over detectron2's 20-iteration window)."""
    numbers = {"series": {}, "first_logged": {}, "last_logged": {}}
    for path, label in zip(metrics_files, _labels(metrics_files, labels)):
        metrics = read_metrics(path)
        keys = sorted({k for m in metrics for k in m if FG_KEY.match(k)})
        if not keys:
            raise ValueError(f"{path} logs no roi_head/num_fg_samples: not a two-stage run")
        for key in keys:
            it, fg = _series(metrics, key)
            name = f"{label}: {key}"
            numbers["series"][name] = {"iteration": it, "num_fg_samples": fg}
            numbers["first_logged"][name], numbers["last_logged"][name] = fg[0], fg[-1]
    return numbers


def _accuracies(metrics, module):
    """(iterations, positive accuracy, negative accuracy, source) of one run."""
    prefix = "" if any("fast_rcnn/fg_cls_accuracy" in m for m in metrics) else f"m{module}/"
    fg_key, bg_key = prefix + "fast_rcnn/fg_cls_accuracy", prefix + "fast_rcnn/bg_cls_accuracy"
    if not any(fg_key in m for m in metrics):
        raise ValueError(f"no {fg_key} in the metrics (is --module right?)")
    if any(bg_key in m for m in metrics):
        it, fg = _series(metrics, fg_key)
        bg = [m[bg_key] for m in metrics if fg_key in m and "iteration" in m]
        return it, fg, bg, bg_key
    # detectron2's own heads log cls/fg accuracy and sample counts but not background accuracy:
    # bg = (acc * (n_fg + n_bg) - fg_acc * n_fg) / n_bg, from the logged (windowed) values
    needed = ("fast_rcnn/cls_accuracy", fg_key, "roi_head/num_fg_samples",
              "roi_head/num_bg_samples")
    rows = [m for m in metrics if all(k in m for k in needed)]
    it = [m["iteration"] for m in rows]
    fg = [m[fg_key] for m in rows]
    bg = [(m[needed[0]] * (m[needed[2]] + m[needed[3]]) - m[fg_key] * m[needed[2]]) / m[needed[3]]
          for m in rows]
    return it, fg, bg, "derived from cls_accuracy, fg_cls_accuracy and sample counts"


def accuracy(metrics_files, labels=None, module=0):
    """Fig. 3: training classification accuracy on positive RoIs and on negative RoIs over
    iterations, e.g. for a baseline and an RGA run (``module``: the PRM module of PRM runs)."""
    numbers = {"series": {}, "mean_positive_accuracy": {}, "mean_negative_accuracy": {},
               "negative_accuracy_source": {}}
    for path, label in zip(metrics_files, _labels(metrics_files, labels)):
        it, fg, bg, source = _accuracies(read_metrics(path), module)
        numbers["series"][label] = {"iteration": it, "positive": fg, "negative": bg}
        numbers["mean_positive_accuracy"][label] = float(np.mean(fg))
        numbers["mean_negative_accuracy"][label] = float(np.mean(bg))
        numbers["negative_accuracy_source"][label] = source
    return numbers


@torch.no_grad()
def module_scores(model, data_loader, num_images):
    """Per ensemble detection, every PRM module's own softmax score of the detected class."""
    roi_heads = model.roi_heads
    if not hasattr(roi_heads, "prm") or isinstance(roi_heads.box_head[0], torch.nn.ModuleList):
        raise ValueError("the scores diagnostic needs ParallelROIHeads (non-cascade PRM)")
    per_module, seen = [[] for _ in roi_heads.box_head], 0
    for inputs in data_loader:
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        box_features = roi_heads.box_pooler([features[f] for f in roi_heads.box_in_features],
                                            [p.proposal_boxes for p in proposals])
        predictor, predictions = roi_heads.prm.test_predictions(
            box_features, roi_heads.box_head, roi_heads.box_predictor)
        instances, kept = predictor.inference(predictions, proposals)
        for k, (head, pred) in enumerate(zip(roi_heads.box_head, roi_heads.box_predictor)):
            probs = pred.predict_probs(pred(head(box_features)), proposals)
            for p, inst, idx in zip(probs, instances, kept):
                per_module[k].append(p[idx, inst.pred_classes])
        seen += len(proposals)
        if seen >= num_images:
            break
    return [torch.cat(s).numpy() if s else np.zeros(0) for s in per_module]


def scores(per_module, positive_fractions, num_images):
    """Fig. 6 numbers of :func:`module_scores`' output: detections, mean score per module and,
    for two or more modules, how often modules 0 and 1 differ by more than 0.1."""
    numbers = {"num_detections": int(len(per_module[0])), "images": num_images,
               "positive_fractions": list(positive_fractions),
               "mean_score": [float(s.mean()) if len(s) else None for s in per_module]}
    if len(per_module) >= 2:
        diff = np.abs(per_module[0] - per_module[1])
        numbers["fraction_abs_diff_gt_0.1"] = float((diff > 0.1).mean()) if len(diff) else None
        numbers["mean_abs_diff"] = float(diff.mean()) if len(diff) else None
        numbers["paper_anchor"] = "COCO minival, 1:1 vs 1:9: more than 21.9% differ by > 0.1"
    return numbers
