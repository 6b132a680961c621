"""Measurements of IoU-uniform R-CNN behind the paper's figures (``tools/diagnose_iou_uniform.py``
runs them and plots the numbers).

- :func:`iou_hist`: IoU histogram of the positive sampled RPN RoIs vs the generated samples
  (paper Fig. 1a).
- :func:`loc_gain`: IoU after regression vs IoU before, per input-IoU bin (Fig. 3); works for
  ``IoUUniformROIHeads`` and for detectron2's ``StandardROIHeads`` (a baseline checkpoint).
- :func:`iou_pred_pairs` / :func:`iou_pred_summary`: predicted IoU vs true IoU of the
  detections, with and without EFO (Fig. 8).

``iou_hist`` uses the first training dataset, the others the first test dataset; images are
resized as at test time and the first ``num_images`` of them are used.
"""
import numpy as np
import torch

from d2ext.analysis import best_same_class_iou, pearson_r
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from .roi_heads import IoUUniformROIHeads, refine_boxes
from .sample_generator import IoUUniformSampleGenerator, paired_iou

__all__ = ["EDGES", "iou_hist", "loc_gain", "iou_pred_pairs", "iou_pred_summary"]

EDGES = np.round(np.arange(0.5, 1.0001, 0.05), 2)  # 10 bins of input / target IoU


def _batches(cfg, dataset, num_images):
    """Mapped dicts of ``dataset`` (test-time resize, GT ``instances`` kept), one at a time."""
    mapper = DatasetMapper(
        is_train=True,  # keeps the annotations, transformed to the resized frame
        augmentations=[T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)],
        image_format=cfg.INPUT.FORMAT,
    )
    for d in DatasetCatalog.get(dataset)[:num_images]:
        yield mapper(d)


def _features_and_proposals(model, d):
    images = model.preprocess_image([d])
    features = model.backbone(images.tensor)
    proposals, _ = model.proposal_generator(images, features, None)
    gt = d["instances"].to(model.device)
    return features, proposals[0], gt


def _histogram(values):
    counts, _ = np.histogram(np.clip(values, EDGES[0] + 1e-6, 1.0), bins=EDGES)
    return counts.tolist()


@torch.no_grad()
def iou_hist(cfg, model, num_images):
    """Fig. 1a: IoU with the matched GT of the positive sampled RPN RoIs (GT-appended boxes
    excluded) and of the generated samples (generator of MODEL.IOU_UNIFORM), same images."""
    heads = model.roi_heads
    generator = IoUUniformSampleGenerator(cfg)
    rpn, gen = [], []
    with EventStorage():
        for d in _batches(cfg, cfg.DATASETS.TRAIN[0], num_images):
            _, proposals, gt = _features_and_proposals(model, d)
            if len(gt) == 0:
                continue
            (p,) = heads.label_and_sample_proposals([proposals], [gt])
            p = p[p.gt_classes < heads.num_classes]
            p = p[~(p.proposal_boxes.tensor == p.gt_boxes.tensor).all(dim=1)]
            rpn.append(paired_iou(p.proposal_boxes.tensor, p.gt_boxes.tensor).cpu())
            gen.append(generator(gt.gt_boxes, gt.image_size).ious.cpu())
    rpn, gen = torch.cat(rpn).numpy(), torch.cat(gen).numpy()
    numbers = {"bin_edges": EDGES.tolist(), "images": num_images}
    for name, v in (("rpn_positives", rpn), ("generated", gen)):
        numbers[name] = {
            "count": int(len(v)), "per_image": float(len(v) / max(num_images, 1)),
            "mean_iou": float(v.mean()) if len(v) else None, "hist": _histogram(v),
            "share_above_0.8": float((v > 0.8).mean()) if len(v) else None,
        }
    return numbers


def _regressed_boxes(model, features, boxes, gt_classes, image_size):
    """Boxes after one pass of the model's box regressor (IoU-uniform or detectron2's)."""
    heads = model.roi_heads
    f = [features[k] for k in heads.box_in_features]
    if isinstance(heads, IoUUniformROIHeads):
        deltas, _ = heads.regress(f, [boxes])
        return refine_boxes(heads.box2box_transform, [boxes], deltas, [image_size])[0].tensor
    predictions = heads.box_predictor(heads.box_head(heads.box_pooler(f, [boxes])))
    inst = Instances(image_size, proposal_boxes=boxes)
    pred = heads.box_predictor.predict_boxes(predictions, [inst])[0]  # (R, 4 * C) or (R, 4)
    if pred.shape[1] > 4:
        pred = pred.view(len(boxes), -1, 4)[torch.arange(len(boxes)), gt_classes]
    out = Boxes(pred)
    out.clip(image_size)
    return out.tensor


# jitter table of the loc_gain probes: one narrow interval per 0.05 bin, ranges of the
# generator's interval containing it, 2,000 attempts so that the top bins fill too
# (keyed by the first decimal of the bin's lower end)
_PROBE_RANGES = {5: (0.75, (0.5, 2.0)), 6: (0.5, (0.6, 1.6)), 7: (0.3, (0.7, 1.4)),
                 8: (0.125, (0.8, 1.25)), 9: (0.125, (0.9, 1.25))}


@torch.no_grad()
def loc_gain(cfg, model, num_images):
    """Fig. 3: jittered boxes around test GTs in 0.05-wide input-IoU bins are regressed once;
    per bin: mean input IoU, mean output IoU with the same GT, localization gain."""
    lows = EDGES[:-1]
    tables = [_PROBE_RANGES[int(round(lo * 100)) // 10] for lo in lows]
    probe = IoUUniformSampleGenerator(
        intervals=list(zip(lows, EDGES[1:])),
        center_offsets=[t[0] for t in tables],
        scale_ranges=[t[1] for t in tables],
        num_per_interval=8, num_attempts=2000, argmax_filter=True,
    )
    ins, outs = [], []
    for d in _batches(cfg, cfg.DATASETS.TEST[0], num_images):
        features, _, gt = _features_and_proposals(model, d)
        s = probe(gt.gt_boxes, gt.image_size)
        if len(s) == 0:
            continue
        boxes = _regressed_boxes(model, features, Boxes(s.boxes), gt.gt_classes[s.gt_inds],
                                 gt.image_size)
        ins.append(s.ious.cpu())
        outs.append(paired_iou(boxes, gt.gt_boxes.tensor[s.gt_inds]).cpu())
    ins, outs = torch.cat(ins).numpy(), torch.cat(outs).numpy()
    bins = np.clip(np.digitize(ins, EDGES[1:-1], right=True), 0, len(lows) - 1)
    rows = []
    for b, lo in enumerate(lows):
        m = bins == b
        rows.append({"interval": [float(lo), float(EDGES[b + 1])], "count": int(m.sum()),
                     "mean_input_iou": float(ins[m].mean()) if m.any() else None,
                     "mean_output_iou": float(outs[m].mean()) if m.any() else None,
                     "gain": float((outs[m] - ins[m]).mean()) if m.any() else None,
                     "improved_fraction": float((outs[m] > ins[m]).mean()) if m.any() else None})
    return {"roi_heads": type(model.roi_heads).__name__, "images": num_images,
            "bins": rows, "mean_gain": float((outs - ins).mean())}


@torch.no_grad()
def iou_pred_pairs(cfg, model, num_images, efo):
    """Fig. 8: ``(predicted, true)`` IoU arrays of every detection on the first test dataset,
    with EFO on or off (``efo``): ``pred_ious`` vs the best IoU with a GT of its class."""
    heads = model.roi_heads
    if not isinstance(heads, IoUUniformROIHeads):
        raise ValueError(f"iou_pred needs IoUUniformROIHeads, the model has {type(heads).__name__}")
    saved, heads.efo = heads.efo, efo
    pred, true = [], []
    try:
        for d in _batches(cfg, cfg.DATASETS.TEST[0], num_images):
            (det,) = model.inference([d], do_postprocess=False)
            gt = d["instances"].to(det.pred_boxes.device)
            true.append(best_same_class_iou(det.pred_boxes, det.pred_classes, gt.gt_boxes,
                                            gt.gt_classes).cpu())
            pred.append(det.pred_ious.cpu())
    finally:
        heads.efo = saved
    return torch.cat(pred).numpy(), torch.cat(true).numpy()


def iou_pred_summary(pred, true):
    """Pearson r and mean absolute error of predicted vs true IoU, over every detection and
    over those with true IoU > 0.5."""
    pos = true > 0.5
    return {
        "detections": int(len(pred)), "pearson": pearson_r(pred, true),
        "pearson_true_iou_above_0.5": pearson_r(pred[pos], true[pos]),
        "mean_abs_error": float(np.abs(pred - true).mean()),
        "mean_abs_error_true_iou_above_0.5": float(np.abs(pred[pos] - true[pos]).mean())
        if pos.any() else None,
    }
