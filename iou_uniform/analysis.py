"""Measurements of IoU-uniform R-CNN behind the paper's figures (``tools/diagnose_iou_uniform.py``
runs them and plots the numbers).

- :func:`iou_hist`: IoU histogram of the positive sampled RPN RoIs vs the generated samples
  (paper Fig. 1a).
- :func:`loc_gain`: IoU after one regression (:func:`regress`) vs IoU before, per input-IoU
  interval (Fig. 3), on jittered probes around the GTs or on the RPN's test-time proposals;
  works for ``IoUUniformROIHeads`` and for detectron2's ``StandardROIHeads`` (a baseline
  checkpoint), so that the two compare on the same images.
- :func:`iou_pred_pairs` / :func:`iou_pred_summary`: predicted IoU vs true IoU of the final
  detections, with and without EFO (Fig. 8).
- :func:`reorder`: how often the IoU score p_c · u (EFO on or off) ranks a worse-localized
  candidate of a GT above the top one by p_c alone (§3.2).
- :func:`top_origin`: where each GT's top box comes from: the input IoU of the proposal it was
  regressed from, and its own IoU, for a baseline or an IoU-uniform model.
- :func:`tower_activity`: which ReLU units of the box towers still fire, and how alike the
  pooled features they read are (the collapse of docs/iou_uniform.md#training-collapse).

``iou_hist`` and ``tower_activity`` use the first training dataset, the others the first test
dataset; images are resized as at test time and the first ``num_images`` of them are used. The
model is expected in eval mode (``d2ext.tooling.load_trained_model``): its RPN then gives the
test-time proposals.
"""
import numpy as np
import torch
from torch import nn

from d2ext.analysis import best_same_class_iou, best_same_class_match, pearson_r
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import transforms as T
from detectron2.layers import Conv2d
from detectron2.modeling.roi_heads import CascadeROIHeads
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import EventStorage

from .inference import candidate_scores
from .roi_heads import IoUUniformROIHeads, refine_boxes
from .sample_generator import IoUUniformSampleGenerator, paired_iou

__all__ = ["EDGES", "PROPOSAL_EDGES", "LOC_GAIN_SOURCES", "iou_hist", "regress", "loc_gain",
           "iou_pred_pairs", "iou_pred_summary", "reorder", "top_origin", "tower_activity"]

EDGES = np.round(np.arange(0.5, 1.0001, 0.05), 2)  # 10 bins of input / target IoU
# loc_gain on proposals: Fig. 3's 0.1-wide input-IoU intervals above 0.5, and two below it
PROPOSAL_EDGES = np.round(np.arange(0.3, 1.0001, 0.1), 1)
# top_origin: the input IoU of a GT's top box, from 0 (a proposal anywhere) to 1
ORIGIN_EDGES = np.concatenate([[0.0], PROPOSAL_EDGES])
# a box above this IoU with its GT counts at AP90 (high_iou_fraction of _gain_rows)
HIGH_IOU = 0.9
# an IoU change smaller than this is float rounding (a zero-delta regression moves a box by an
# ulp of its coordinates), neither an improvement nor a loss
IOU_CHANGE_TOL = 1e-4


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


def _single_pass_heads(model, features, name):
    """The model's ROI heads and their input features (``box_in_features``); ValueError naming
    ``name`` for a cascade, for which one regression pass is not defined."""
    heads = model.roi_heads
    if isinstance(heads, CascadeROIHeads):
        raise ValueError(f"{name} needs one regression pass, which a cascade does not define; "
                         f"use a Faster R-CNN model, not {type(heads).__name__}")
    return heads, [features[k] for k in heads.box_in_features]


def regress(model, features, boxes, classes, image_size):
    """Boxes after one pass of the model's box regressor, clipped to the image: the
    class-agnostic regression tower of ``IoUUniformROIHeads``, or for detectron2's
    ``StandardROIHeads`` (and subclasses with its ``box_predictor``, e.g. the IoU-balanced
    head) the deltas of each box's class in ``classes`` (class-agnostic deltas as they are).

    Args:
        features (dict[str, Tensor]): the backbone features of one image.
        boxes (Boxes): R input boxes; classes (Tensor): (R,) their classes.
        image_size (tuple): (h, w) of the image.
    Returns:
        Tensor: (R, 4) regressed boxes.
    """
    heads, f = _single_pass_heads(model, features, "regress")
    if isinstance(heads, IoUUniformROIHeads):
        deltas, _ = heads.regress(f, [boxes])
        return refine_boxes(heads.box2box_transform, [boxes], deltas, [image_size])[0].tensor
    _, pred = _box_predictor_outputs(heads, f, boxes, image_size)
    return pred[torch.arange(len(boxes)), classes if pred.shape[1] > 1 else 0]


def _box_predictor_outputs(heads, features, boxes, image_size):
    """A ``StandardROIHeads``' ``box_predictor`` on ``boxes`` (Boxes, R) of one image:
    probabilities (R, C+1) and the regressed boxes (R, C, 4), or (R, 1, 4) for class-agnostic
    deltas, clipped to the image."""
    predictions = heads.box_predictor(heads.box_head(heads.box_pooler(features, [boxes])))
    inst = [Instances(image_size, proposal_boxes=boxes)]
    probs = heads.box_predictor.predict_probs(predictions, inst)[0]
    pred = Boxes(heads.box_predictor.predict_boxes(predictions, inst)[0].reshape(-1, 4))
    pred.clip(image_size)
    return probs, pred.tensor.view(len(boxes), -1, 4)


# jitter table of the loc_gain probes: one narrow interval per 0.05 bin, ranges of the
# generator's interval containing it, 2,000 attempts so that the top bins fill too
# (keyed by the first decimal of the bin's lower end)
_PROBE_RANGES = {5: (0.75, (0.5, 2.0)), 6: (0.5, (0.6, 1.6)), 7: (0.3, (0.7, 1.4)),
                 8: (0.125, (0.8, 1.25)), 9: (0.125, (0.9, 1.25))}


def _generated_ious(cfg, model, num_images):
    """(input, output) IoU of jittered probes around the test GTs, 8 per GT and 0.05 bin of
    ``EDGES``, regressed once with the GT's class; and the number of probes."""
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
        boxes = regress(model, features, Boxes(s.boxes), gt.gt_classes[s.gt_inds], gt.image_size)
        ins.append(s.ious.cpu())
        outs.append(paired_iou(boxes, gt.gt_boxes.tensor[s.gt_inds]).cpu())
    return ins, outs, sum(len(x) for x in ins)


def _proposal_ious(cfg, model, num_images):
    """(input, output) IoU of the RPN's test-time proposals with IoU > ``PROPOSAL_EDGES[0]``
    with their best-overlapping GT of any class (a proposal has no class), regressed once with
    that GT's class; and the number of proposals of the images with GT."""
    ins, outs, total = [], [], 0
    for d in _batches(cfg, cfg.DATASETS.TEST[0], num_images):
        features, proposals, gt = _features_and_proposals(model, d)
        if len(gt) == 0:
            continue
        total += len(proposals)
        iou, gt_inds = pairwise_iou(proposals.proposal_boxes, gt.gt_boxes).max(dim=1)
        keep = iou > PROPOSAL_EDGES[0]
        if not keep.any():
            continue
        gt_inds = gt_inds[keep]
        boxes = regress(model, features, proposals.proposal_boxes[keep], gt.gt_classes[gt_inds],
                        gt.image_size)
        ins.append(iou[keep].cpu())
        outs.append(paired_iou(boxes, gt.gt_boxes.tensor[gt_inds]).cpu())
    return ins, outs, total


LOC_GAIN_SOURCES = {"generated": (_generated_ious, EDGES),
                    "proposals": (_proposal_ious, PROPOSAL_EDGES)}


def _gain_rows(ins, outs, edges):
    """One row per (lo, hi] input-IoU interval of ``edges``: count, mean input and output IoU,
    gain (mean output − input), the shares the regression improved and made worse (by more
    than ``IOU_CHANGE_TOL``, above the float rounding of the box coder), and the share whose
    output IoU is above ``HIGH_IOU``. The edges are compared in the IoUs' precision, so that a
    float32 IoU of 0.6 is in (0.5, 0.6]."""
    edges = np.asarray(edges, dtype=ins.dtype)
    bins = np.digitize(ins, edges[1:-1], right=True)
    inside = (ins > edges[0]) & (ins <= edges[-1])
    rows = []
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        m = inside & (bins == b)
        i, o = ins[m], outs[m]
        rows.append({"interval": [round(float(lo), 2), round(float(hi), 2)],
                     "count": int(m.sum()),
                     "mean_input_iou": float(i.mean()) if m.any() else None,
                     "mean_output_iou": float(o.mean()) if m.any() else None,
                     "gain": float((o - i).mean()) if m.any() else None,
                     "improved_fraction": float((o > i + IOU_CHANGE_TOL).mean())
                     if m.any() else None,
                     "worse_fraction": float((o < i - IOU_CHANGE_TOL).mean())
                     if m.any() else None,
                     "high_iou_fraction": float((o > HIGH_IOU).mean()) if m.any() else None})
    return rows


@torch.no_grad()
def loc_gain(cfg, model, num_images, source="generated"):
    """Fig. 3: the IoU with the GT of boxes regressed once by the model (:func:`regress`),
    against their input IoU, per input-IoU interval; for a baseline or an IoU-uniform model.

    ``source``: "generated": jittered probes around the test GTs in 0.05-wide bins of
    (0.5, 1.0] (8 per GT and bin); "proposals": the RPN's test-time proposals (the model in
    eval mode), each with its best-overlapping GT, in the intervals (0.5, 0.6], ..., (0.9, 1.0]
    (``bins``) and (0.3, 0.4], (0.4, 0.5] (``below_0.5``).

    Returns a dict: ``roi_heads``, ``source``, ``images``, ``boxes`` (every probe, or every
    proposal of the images with GT), ``kept`` (boxes with input IoU > 0.5, the sum of the
    bins' counts), ``bins`` (rows of :func:`_gain_rows`), ``mean_gain`` (over the kept boxes)
    and ``below_0.5`` (rows below 0.5: none for the probes).
    """
    if source not in LOC_GAIN_SOURCES:
        raise ValueError(f"source must be one of {tuple(LOC_GAIN_SOURCES)}, got {source!r}")
    pairs, edges = LOC_GAIN_SOURCES[source]
    ins, outs, boxes = pairs(cfg, model, num_images)
    ins, outs = (torch.cat(x).numpy() if x else np.zeros(0, np.float32) for x in (ins, outs))
    rows = _gain_rows(ins, outs, edges)
    kept = ins > 0.5
    return {"roi_heads": type(model.roi_heads).__name__, "source": source,
            "images": num_images, "boxes": boxes, "kept": int(kept.sum()),
            "bins": [r for r in rows if r["interval"][0] >= 0.5],
            "mean_gain": float((outs[kept] - ins[kept]).mean()) if kept.any() else None,
            "below_0.5": [r for r in rows if r["interval"][0] < 0.5]}


def _iou_uniform_heads(model, name):
    """The model's ROI heads; ValueError naming the diagnostic ``name`` unless they are
    ``IoUUniformROIHeads`` (the diagnostics of the IoU output need them)."""
    heads = model.roi_heads
    if not isinstance(heads, IoUUniformROIHeads):
        raise ValueError(f"{name} needs IoUUniformROIHeads, the model has {type(heads).__name__}")
    return heads


@torch.no_grad()
def iou_pred_pairs(cfg, model, num_images, efo):
    """Fig. 8: ``(predicted, true)`` IoU arrays of every detection on the first test dataset,
    with EFO on or off (``efo``): ``pred_ious`` vs the best IoU with a GT of its class."""
    heads = _iou_uniform_heads(model, "iou_pred")
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


def _top_box_ious(boxes, probs, ious, gt, score_thresh, match_iou):
    """(N, 3): for each of the N GTs of one image with candidates, the true IoU of its top
    candidate by p_c, of its top candidate by p_c · u, and its best candidate's.

    The candidates are the (RoI, class c) pairs scored by :func:`candidate_scores` (p_c above
    ``score_thresh``, before NMS); each is matched to its best GT of class c, when that IoU is
    at least ``match_iou``."""
    rois, classes, by_iou = candidate_scores(boxes.tensor, probs, ious, "cls_x_iou", score_thresh)
    _, _, by_cls = candidate_scores(boxes.tensor, probs, ious, "cls", score_thresh)
    true, gt_inds = best_same_class_match(boxes[rois], classes, gt.gt_boxes, gt.gt_classes)
    matched = true >= match_iou
    rows = []
    for g in gt_inds[matched].unique().tolist():
        m = matched & (gt_inds == g)
        t = true[m]
        rows.append([t[by_cls[m].argmax()], t[by_iou[m].argmax()], t.max()])
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 3)


def _reorder_summary(t):
    """Counts and mean IoUs of :func:`reorder` from the stacked rows of :func:`_top_box_ious`."""
    by_cls, by_iou, best = t.numpy().T
    n = len(t)
    lose, win = by_iou < by_cls, by_iou > by_cls

    def mean(x):
        return float(x.mean()) if len(x) else None

    return {"gts_with_candidates": n, "lose": int(lose.sum()), "win": int(win.sum()),
            "tie": int(n - lose.sum() - win.sum()),
            "lose_fraction": float(lose.mean()) if n else None,
            "win_fraction": float(win.mean()) if n else None,
            "mean_iou_top_cls": mean(by_cls), "mean_iou_top_cls_x_iou": mean(by_iou),
            "mean_iou_best": mean(best),
            "mean_iou_drop_when_lose": mean(by_cls[lose] - by_iou[lose]),
            "mean_iou_rise_when_win": mean(by_iou[win] - by_cls[win])}


@torch.no_grad()
def reorder(cfg, model, num_images, match_iou=0.5):
    """How often the IoU score reorders the top box of a GT so that a better-localized box
    loses (§3.2, Fig. 5, Fig. 9): on the test-time detection candidates of an IoU-uniform model
    before NMS (:meth:`IoUUniformROIHeads.refined_candidates`), for every GT, the top candidate
    of its class matched to it (IoU >= ``match_iou``) under p_c alone against the top under
    p_c · u, with u from EFO (``efo_on``) and u predicted at the proposal (``efo_off``),
    whatever the config's ``EFO`` and ``SCORE_MODE``.

    Per setting: ``lose`` / ``win`` / ``tie``: GTs whose top box under p_c · u has a lower /
    higher / equal true IoU than the top box under p_c (their sum is
    ``gts_with_candidates``), their fractions, the mean true IoU of the top box under p_c, under
    p_c · u and of the best candidate, and the mean IoU change of the losses and the wins.
    """
    heads = _iou_uniform_heads(model, "reorder")
    rows, gts = {"efo_on": [], "efo_off": []}, 0
    for d in _batches(cfg, cfg.DATASETS.TEST[0], num_images):
        features, proposals, gt = _features_and_proposals(model, d)
        gts += len(gt)
        if len(gt) == 0:
            continue
        f = [features[k] for k in heads.box_in_features]
        (boxes,), probs, u_proposal, _ = heads.refined_candidates(f, [proposals])
        u_efo = heads.efo_ious(f, [boxes], heads.reg_iou_outputs)
        for key, u in (("efo_on", u_efo), ("efo_off", u_proposal)):
            rows[key].append(_top_box_ious(boxes, probs, u, gt, heads.test_score_thresh,
                                           match_iou).cpu())
    numbers = {"roi_heads": type(heads).__name__, "images": num_images, "gts": gts,
               "match_iou": match_iou, "score_thresh": heads.test_score_thresh}
    for key, r in rows.items():
        numbers[key] = _reorder_summary(torch.cat(r) if r else torch.zeros(0, 3))
    return numbers


def _scored_candidates(model, features, proposals):
    """The test-time detection candidates of one image before NMS, scored as the model scores
    them: ``(sources, boxes, classes, scores)``, one row per (proposal, class c) pair with p_c
    above the score threshold; ``sources`` (Boxes) are the proposals the boxes were regressed
    from. ``IoUUniformROIHeads``: the class-agnostic refined box, score p_c or p_c · u by its
    ``SCORE_MODE``, u from EFO when ``EFO`` is on; a ``StandardROIHeads`` box predictor: the
    deltas of class c, score p_c."""
    heads, f = _single_pass_heads(model, features, "top_origin")
    if isinstance(heads, IoUUniformROIHeads):
        (boxes,), probs, u, keep = heads.refined_candidates(f, [proposals])
        if heads.efo:
            u = heads.efo_ious(f, [boxes], heads.reg_iou_outputs)
        rois, classes, scores = candidate_scores(boxes.tensor, probs, u, heads.score_mode,
                                                 heads.test_score_thresh)
        return proposals.proposal_boxes[keep][rois], boxes[rois], classes, scores
    probs, pred = _box_predictor_outputs(heads, f, proposals.proposal_boxes, proposals.image_size)
    fg = probs[:, :-1]
    rois, classes = (fg > heads.box_predictor.test_score_thresh).nonzero(as_tuple=True)
    boxes = pred[rois, classes if pred.shape[1] > 1 else 0]
    return proposals.proposal_boxes[rois], Boxes(boxes), classes, fg[rois, classes]


@torch.no_grad()
def top_origin(cfg, model, num_images, match_iou=0.5):
    """Where each GT's top box comes from: on the test-time detection candidates before NMS
    (:func:`_scored_candidates`: the model's own regression and score), every candidate is
    matched to its best GT of its class when their IoU is at least ``match_iou``; for each GT
    with candidates, the top-scoring one is its top box (the one NMS keeps for it). Its input
    IoU is the IoU of the proposal it was regressed from with that GT, its output IoU its own.

    Returns a dict: ``roi_heads``, ``images``, ``gts``, ``match_iou``, ``top_boxes`` (GTs with
    candidates), ``mean_output_iou`` and ``high_iou_fraction`` (output IoU > ``HIGH_IOU``) over
    them, and ``intervals``: one row of :func:`_gain_rows` per input-IoU interval of
    ``ORIGIN_EDGES`` (the share of top boxes is ``count / top_boxes``). A baseline's top boxes
    that IoU-uniform lacks, counted per interval, show which proposals its regression loses.
    """
    rows, gts = [], 0
    for d in _batches(cfg, cfg.DATASETS.TEST[0], num_images):
        features, proposals, gt = _features_and_proposals(model, d)
        gts += len(gt)
        if len(gt) == 0:
            continue
        sources, boxes, classes, scores = _scored_candidates(model, features, proposals)
        true, gt_inds = best_same_class_match(boxes, classes, gt.gt_boxes, gt.gt_classes)
        matched = true >= match_iou
        for g in gt_inds[matched].unique().tolist():
            m = (matched & (gt_inds == g)).nonzero()[:, 0]
            top = m[scores[m].argmax()]
            source_iou = pairwise_iou(sources[top.view(1)], gt.gt_boxes[g])[0, 0]
            rows.append(torch.stack([source_iou, true[top]]).cpu())
    t = torch.stack(rows).numpy() if rows else np.zeros((0, 2), np.float32)
    # a proposal that misses its GT (IoU 0) counts in the first interval, (0, 0.3]
    ins, outs = np.maximum(t[:, 0], np.float32(1e-6)), t[:, 1]
    return {"roi_heads": type(model.roi_heads).__name__, "images": num_images, "gts": gts,
            "match_iou": match_iou, "top_boxes": len(t),
            "mean_output_iou": float(outs.mean()) if len(t) else None,
            "high_iou_fraction": float((outs > HIGH_IOU).mean()) if len(t) else None,
            "intervals": _gain_rows(ins, outs, ORIGIN_EDGES)}


def _activation_layers(tower):
    """``{name: module}`` of a box tower whose outputs are ReLU outputs: its ``nn.ReLU``
    children (detectron2's ``fc_relu<k>``) and its convolutions with an activation."""
    return {name: m for name, m in tower.named_children()
            if isinstance(m, nn.ReLU) or (isinstance(m, Conv2d) and m.activation is not None)}


def _mean_pairwise_cosine(x):
    """Mean cosine similarity over the distinct pairs of the rows of ``x`` (N >= 2)."""
    n = x.shape[0]
    total = torch.nn.functional.normalize(x.double(), dim=1).sum(dim=0)
    return float((total.dot(total) - n) / (n * (n - 1)))


@torch.no_grad()
def tower_activity(cfg, model, num_images, seed=0):
    """Which ReLU units of the box towers still fire (docs/iou_uniform.md#training-collapse).

    Probes: the generated samples (generator of ``MODEL.IOU_UNIFORM``) around the GTs of the
    first ``num_images`` training images, resized as at test time, through the model's pooler.
    Towers: ``cls`` (``roi_heads.box_head``: the classification tower of IoU-uniform R-CNN, the
    shared trunk of a baseline Faster R-CNN) and, for ``IoUUniformROIHeads``, ``reg`` (the
    regression + IoU tower's trunk). Per ReLU layer: ``units``, ``dead_fraction`` (units that
    fire on no probe: they get no gradient from any sample like these) and ``active_fraction``
    (share of unit × probe outputs above 0). ``input``: the probes' pooled features, their mean
    pairwise cosine similarity (near 1: every probe looks alike to the towers, so one weight
    update moves a unit's pre-activation the same way on all of them). The probes are drawn
    with the torch seed ``seed`` (the global RNG is left as it was), so that two models are
    measured on the same probes.
    """
    heads = model.roi_heads
    towers = {"cls": heads.box_head}
    if isinstance(heads, IoUUniformROIHeads):
        towers["reg"] = heads.reg_iou_head.trunk
    outputs, handles = {}, []
    for tower_name, tower in towers.items():
        for name, layer in _activation_layers(tower).items():
            key = f"{tower_name}.{name}"
            handles.append(layer.register_forward_hook(
                lambda m, i, o, key=key: outputs.setdefault(key, []).append(o.flatten(1))))
    generator = IoUUniformSampleGenerator(cfg)
    pooled, probes = [], 0
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for d in _batches(cfg, cfg.DATASETS.TRAIN[0], num_images):
                features, _, gt = _features_and_proposals(model, d)
                if len(gt) == 0:
                    continue
                boxes = generator(gt.gt_boxes, gt.image_size).boxes
                if len(boxes) == 0:
                    continue
                x = heads.box_pooler([features[f] for f in heads.box_in_features],
                                     [Boxes(boxes)])
                for tower in towers.values():
                    tower(x)
                pooled.append(x.flatten(1))
                probes += len(boxes)
    finally:
        for h in handles:
            h.remove()
    if probes < 2:
        raise ValueError(f"tower_activity: {probes} probes from the first {num_images} images "
                         f"of {cfg.DATASETS.TRAIN[0]}; need images with GT boxes")
    x = torch.cat(pooled)
    layers = {}
    for key, outs in outputs.items():
        a = torch.cat(outs)
        layers[key] = {"units": int(a.shape[1]),
                       "dead_fraction": float((a.amax(dim=0) <= 0).float().mean()),
                       "active_fraction": float((a > 0).float().mean())}
    return {"roi_heads": type(heads).__name__, "images": num_images, "probes": probes,
            "input": {"dim": int(x.shape[1]), "mean_norm": float(x.norm(dim=1).mean()),
                      "mean_pairwise_cosine": _mean_pairwise_cosine(x)},
            "layers": layers}
