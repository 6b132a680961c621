"""Measurements of PADet behind the paper's figures (``tools/diagnose_padet.py`` and
``tools/visualize_padet_augmentation.py`` run them and plot the numbers).

- :func:`anchor_balance`: the paper's Figures 1 and 2: per image, the positives and the training
  negatives of the detection module for the initial anchors, APM_C (initial anchors, negatives
  with p < theta ignored), APM_R (promoted anchors, every negative) and APM_CR (promoted anchors
  and the theta rule, i.e. PADet), and the IoU histogram of the positives before and after
  promotion.
- :func:`box_regression`: do the two regressions learn (§3.3's L_r)? Per decoded level, the
  correlation of the APM's and the detection module's predicted deltas with their targets over
  the positives, and their smooth-L1 beside that of a zero prediction.
- :func:`promotion_sources`: where the detection module's positives on the promoted anchors
  come from, by object size: anchors that were APM positives (their deltas have a regression
  target in L_apm) or anchors whose deltas never had one (APM negatives and ignored anchors).
- :func:`feature_separability`: do the features the detection module classifies from carry the
  class? Per decoded level, the share of the feature variance between the GT classes at the
  locations of the initial anchors' positives, for the decoded level D_l (shared with the APM)
  and the detection head's input to its classifier.
- :func:`training_dynamics`: over the checkpoints of one run, on a fixed set of training
  images, the detection head's right-class probability on its training positives by level and
  object size, and how many anchors' training labels flip between consecutive checkpoints.
- :func:`augmentation_statistics`: what the training mapper's SSD augmentation feeds the model
  (boxes per image and box sizes before and after).

Images are read through a ``PADetDatasetMapper``: square-warped to ``INPUT_SIZE``, without
augmentation but for :func:`augmentation_statistics`. Object sizes are COCO's: box area in the
original image below 32², below 96², or above.
"""
from typing import List, NamedTuple, Optional

import numpy as np
import torch
from fvcore.nn import smooth_l1_loss

from d2ext.analysis import class_share_of_variance, gt_boxes_and_classes, pearson_r
from d2ext.checkpoint import ProjectCheckpointer
from detectron2.structures import Boxes, Instances
from detectron2.structures.boxes import matched_pairwise_iou

from .anchors import flatten_anchor_maps

__all__ = ["anchor_balance", "box_regression", "feature_separability", "promotion_sources",
           "training_dynamics",
           "augmentation_statistics"]

IOU_BINS = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
DELTAS = ("dx", "dy", "dw", "dh")
# COCO's object sizes: area (px² of the original image) below 32², below 96², the rest
SIZES = ("small", "medium", "large")
SIZE_AREA_BOUNDS = (32.0 ** 2, 96.0 ** 2)


def _gt_instances(dataset_dict, input_size):
    """GT boxes of a dataset dict, warped like the image to input_size x input_size."""
    sx, sy = input_size / dataset_dict["width"], input_size / dataset_dict["height"]
    boxes, classes = gt_boxes_and_classes(dataset_dict)
    inst = Instances((input_size, input_size))
    inst.gt_boxes = Boxes(boxes * torch.tensor([sx, sy, sx, sy]))
    inst.gt_classes = classes
    return inst


def _positive_ious(boxes, pos, matched):
    return matched_pairwise_iou(Boxes(boxes[pos]), Boxes(matched[pos])).tolist()


class _Batch(NamedTuple):
    gts: List[Instances]  # GT boxes warped to the input square
    area_scale: torch.Tensor  # (N,) original image area / input area, per image
    features: List[torch.Tensor]  # decoded levels D1..D6
    anchors: torch.Tensor  # (M, 4) initial anchors
    logits: Optional[torch.Tensor]  # (N, M) APM logits; None without the scoring branch
    delta_maps: Optional[List[torch.Tensor]]  # APM delta maps; None without adjustment

    @property
    def deltas(self):
        """The APM deltas (N, M, 4) in anchor order, or None."""
        return None if self.delta_maps is None else flatten_anchor_maps(self.delta_maps, 4)

    def promoted(self, model):
        """The boxes the detection module works on, as ``model`` promotes them in training."""
        return model.apm.promote(self.anchors, self.logits, self.deltas, len(self.gts))


def _batches(model, mapper, dataset_dicts, input_size, batch_size):
    """The APM's outputs on ``dataset_dicts``, :class:`_Batch` by batch."""
    for start in range(0, len(dataset_dicts), batch_size):
        dicts = dataset_dicts[start:start + batch_size]
        gts = [_gt_instances(d, input_size).to(model.device) for d in dicts]
        area_scale = torch.tensor([d["width"] * d["height"] / input_size ** 2 for d in dicts],
                                  device=model.device)
        images = model.preprocess_image([mapper(d) for d in dicts])
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.apm.in_features]
        logit_maps, delta_maps = model.apm.predict(features)
        anchors = model.apm.anchors(features, images.tensor.shape[-2:])
        yield _Batch(gts, area_scale, features, anchors, model.apm.flatten(logit_maps, None)[0],
                     delta_maps)


def _anchor_levels(model, features):
    """(M,) the decoded level (0 = D1) of every anchor, in anchor order."""
    sizes = [x.shape[-2] * x.shape[-1] * a
             for x, a in zip(features, model.apm.anchor_generator.num_anchors)]
    device = features[0].device
    return torch.repeat_interleave(torch.arange(len(sizes), device=device),
                                   torch.tensor(sizes, device=device))


def _size_index(boxes, area_scale):
    """Index into ``SIZES`` of boxes (N, M, 4) in the input square of images whose original
    area is ``area_scale`` (N,) times the input's."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    bounds = area.new_tensor(SIZE_AREA_BOUNDS)
    return torch.bucketize(area * area_scale[:, None], bounds, right=True)


@torch.no_grad()
def anchor_balance(model, mapper, dataset_dicts, input_size, batch_size=4):
    """Figure 1 / Figure 2 statistics of ``model`` (a PADet) on ``dataset_dicts``, read through
    ``mapper`` (the inference PADet mapper: square warp to ``input_size``)."""
    if not (model.apm_cls and model.apm_reg):
        raise ValueError("anchor_balance needs both APM branches (MODEL.PADET.APM_CLS and "
                         "APM_REG True): it compares APM_C, APM_R and APM_CR")
    model.eval()
    counts = {k: [0, 0] for k in ("initial", "APM_C", "APM_R", "APM_CR")}
    ious = {"initial": [], "promoted": []}
    num_images = 0
    for batch in _batches(model, mapper, dataset_dicts, input_size, batch_size):
        gts, logits = batch.gts, batch.logits
        initial = batch.anchors.expand(len(gts), -1, -1)
        for name, boxes in (("initial", initial), ("promoted", batch.promoted(model))):
            _, pos, negatives, matched = model.label_promoted(boxes, logits, gts)
            _, _, all_negatives, _ = model.label_promoted(boxes, torch.full_like(logits, 1e4), gts)
            kinds = ("initial", "APM_C") if name == "initial" else ("APM_R", "APM_CR")
            for kind, neg in zip(kinds, (all_negatives, negatives)):
                counts[kind][0] += int(pos.sum())
                counts[kind][1] += int(neg.sum())
            ious[name] += _positive_ious(boxes, pos, matched)
        num_images += len(gts)
    stats = {k: {"pos_per_image": p / num_images, "neg_per_image": n / num_images,
                 "neg_per_pos": n / max(p, 1)} for k, (p, n) in counts.items()}
    hist = {k: np.histogram(v, bins=IOU_BINS)[0].tolist() for k, v in ious.items()}
    return {"num_images": num_images, "balance": stats, "iou_bins": IOU_BINS,
            "positive_iou_histogram_per_image": {k: [c / num_images for c in v]
                                                 for k, v in hist.items()}}


@torch.no_grad()
def box_regression(model, mapper, dataset_dicts, input_size, batch_size=4):
    """Per module ("apm": deltas of the initial anchors; "det": deltas relative to the detection
    module's reference anchors, promoted or initial) and per decoded level: the positives, the
    correlation of predicted and target (dx, dy, dw, dh), and the mean smooth-L1 per delta of
    the prediction and of a zero prediction. No "apm" entry without the APM's adjustment
    branch (``MODEL.PADET.APM_REG`` False)."""
    model.eval()
    # (level, predicted, target) per batch
    found = {"apm": [], "det": []} if model.apm_reg else {"det": []}
    for batch in _batches(model, mapper, dataset_dicts, input_size, batch_size):
        gts, anchors = batch.gts, batch.anchors
        level = _anchor_levels(model, batch.features)
        if model.apm_reg:
            labels, matched = model.apm.label_anchors(anchors, gts)
            pos = labels == 1
            target = model.apm.box2box_transform.get_deltas(
                anchors.expand(len(gts), -1, -1)[pos], matched[pos])
            found["apm"].append((level.expand_as(pos)[pos], batch.deltas[pos], target))
        ref = batch.promoted(model)
        det_deltas = flatten_anchor_maps(model.head(batch.features, batch.delta_maps)[1], 4)
        _, pos, _, matched = model.label_promoted(ref, batch.logits, gts)
        target = model.box2box_transform.get_deltas(ref[pos], matched[pos])
        found["det"].append((level.expand_as(pos)[pos], det_deltas[pos], target))
    result = {"deltas": list(DELTAS)}
    for module, batches in found.items():
        level, pred, target = (torch.cat(t) for t in zip(*batches))
        rows = []
        for k in range(len(model.apm.in_features)):
            p, t = pred[level == k], target[level == k]
            loss = smooth_l1_loss(p, t, model.smooth_l1_beta, "none")
            zero = smooth_l1_loss(torch.zeros_like(t), t, model.smooth_l1_beta, "none")
            rows.append({
                "level": model.apm.in_features[k], "num_positives": len(p),
                "correlation": [pearson_r(p[:, j], t[:, j]) for j in range(4)],
                "smooth_l1": loss.mean(0).tolist() if len(p) else None,
                "smooth_l1_zero_prediction": zero.mean(0).tolist() if len(p) else None,
            })
        result[module] = rows
    return result


# where a detection positive's anchor stands in the APM's own matching on the initial anchors
APM_SOURCES = ("apm_positive", "apm_negative", "apm_ignored")


@torch.no_grad()
def promotion_sources(model, mapper, dataset_dicts, input_size, batch_size=4):
    """Where the detection module's positives come from (its training matching on the promoted
    anchors, §3.1), by the size of their GT ("all" sizes too): the GTs, the APM positives and
    the detection positives per GT, and the share of the detection positives whose anchor was
    an APM positive (its deltas regressed towards a GT in L_apm), an APM negative or ignored by
    the APM's matching (deltas never given a target, APM_SOURCES), and the share whose anchor
    was promoted (below ``MODEL.PADET.APM_PROMOTE_THRESH`` an anchor keeps its initial box)."""
    if not model.apm_reg:
        raise ValueError("promotion_sources needs the APM's adjustment branch "
                         "(MODEL.PADET.APM_REG True): without it no anchor is promoted")
    model.eval()
    num_sizes, num_sources = len(SIZES), len(APM_SOURCES)
    gts_by_size, apm_by_size = torch.zeros(num_sizes), torch.zeros(num_sizes)
    det = torch.zeros(num_sizes, num_sources)  # detection positives by (size, source)
    det_promoted = torch.zeros(num_sizes)
    num_images = 0
    for batch in _batches(model, mapper, dataset_dicts, input_size, batch_size):
        gts = batch.gts
        for i, inst in enumerate(gts):
            size = _size_index(inst.gt_boxes.tensor[None], batch.area_scale[i:i + 1])
            gts_by_size += torch.bincount(size.flatten().cpu(), minlength=num_sizes)
        apm_labels, apm_matched = model.apm.label_anchors(batch.anchors, gts)
        apm_size = _size_index(apm_matched, batch.area_scale)[apm_labels == 1]
        apm_by_size += torch.bincount(apm_size.cpu(), minlength=num_sizes)
        _, pos, _, matched = model.label_promoted(batch.promoted(model), batch.logits, gts)
        size = _size_index(matched, batch.area_scale)[pos].cpu()
        source = (1 - apm_labels)[pos].cpu()  # APM label 1, 0, -1 -> index into APM_SOURCES
        det += torch.bincount(size * num_sources + source,
                              minlength=num_sizes * num_sources).view(num_sizes, num_sources)
        promoted = (model.apm.promoted_mask(batch.logits)[pos] if model.apm.promote_thresh > 0
                    else torch.ones_like(size, dtype=torch.bool))
        det_promoted += torch.bincount(size[promoted.cpu()], minlength=num_sizes)
        num_images += len(gts)

    def row(k):  # k: a size index, or slice(None) for all sizes
        num_gts, num_det = gts_by_size[k].sum(), det[k].sum()
        return {"num_gts": int(num_gts),
                "apm_positives_per_gt": _ratio(apm_by_size[k].sum(), num_gts),
                "det_positives_per_gt": _ratio(num_det, num_gts),
                "det_positive_sources": {name: _ratio(det[k][..., j].sum(), num_det)
                                         for j, name in enumerate(APM_SOURCES)},
                "det_positives_promoted": _ratio(det_promoted[k].sum(), num_det)}

    by_size = {name: row(k) for k, name in enumerate(SIZES)}
    by_size["all"] = row(slice(None))
    return {"num_images": num_images, "apm_promote_thresh": model.apm.promote_thresh,
            "sources": list(APM_SOURCES), "by_size": by_size}


@torch.no_grad()
def feature_separability(model, mapper, dataset_dicts, input_size, batch_size=4):
    """Per decoded level, how much of the features' variance lies between the GT classes
    (:func:`~d2ext.analysis.class_share_of_variance`) at the locations where the detection
    module classifies objects, for two features: the decoded level D_l, which the APM's
    branches share with the detection module, and the head's features that the class conv
    reads (after its CBR block and the FAM).

    The locations are those of the *initial* anchors' positives (the matching of the initial
    anchors, the same for every model of a config, so that models compare on the same
    samples), one sample per location; a location whose positives belong to GTs of different
    classes is left out. A level whose locations hold fewer than two classes gets None.
    """
    model.eval()
    levels = list(model.apm.in_features)
    num_anchors = model.apm.anchor_generator.num_anchors
    samples = {lvl: {"decoded": [], "head": [], "classes": []} for lvl in levels}
    skipped = dict.fromkeys(levels, 0)
    for batch in _batches(model, mapper, dataset_dicts, input_size, batch_size):
        initial = batch.anchors.expand(len(batch.gts), -1, -1)
        targets, pos, _, _ = model.label_promoted(initial, batch.logits, batch.gts)
        start = 0
        for i, (lvl, x) in enumerate(zip(levels, batch.features)):
            head = model.head.aligned_features(
                i, x, None if batch.delta_maps is None else batch.delta_maps[i])
            n, _, h, w = x.shape
            count = h * w * num_anchors[i]
            p = pos[:, start:start + count].reshape(n, h * w, -1)
            t = targets[:, start:start + count].reshape(n, h * w, -1)
            start += count
            low = torch.where(p, t, model.num_classes).min(-1).values
            high = torch.where(p, t, -1).max(-1).values
            located = p.any(-1)
            keep = located & (low == high)
            skipped[lvl] += int((located & ~keep).sum())
            s = samples[lvl]
            s["decoded"].append(x.flatten(2).transpose(1, 2)[keep].cpu())
            s["head"].append(head.flatten(2).transpose(1, 2)[keep].cpu())
            s["classes"].append(low[keep].cpu())
    by_level = {}
    for lvl, s in samples.items():
        classes = torch.cat(s["classes"])
        by_level[lvl] = {
            "num_locations": len(classes),
            "num_classes": len(classes.unique()),
            "mixed_class_locations_left_out": skipped[lvl],
            **{key: class_share_of_variance(torch.cat(s[key]), classes)
               for key in ("decoded", "head")},
        }
    return {"num_images": len(dataset_dicts), "levels": levels, "by_level": by_level}


@torch.no_grad()
def training_dynamics(model, checkpoints, mapper, dataset_dicts, input_size, batch_size=4):
    """How the detection module's training targets and its fit to them move during one run.

    ``model`` (eval mode) loads each of ``checkpoints`` (paths, in training order) in turn and
    reads the same ``dataset_dicts`` (a fixed set of training images, through the unaugmented
    ``mapper``). Per checkpoint: the detection head's mean probability of the right class on
    its training positives (matching on the promoted anchors, as in training), overall, by
    decoded level, by GT size and by both. Per pair of consecutive checkpoints: the fraction of
    the anchors whose training label (the GT class of a positive, background for a negative
    that trains, ignored for the IoU band and the theta rule) changes, over all anchors and
    over the anchors that are positive at either checkpoint.
    """
    model.eval()
    levels = list(model.apm.in_features)
    checkpointer = ProjectCheckpointer(model)
    rows, flips, previous = [], [], None
    for path in checkpoints:
        iteration = checkpointer.load(path).get("iteration")
        probs, groups, labels = [], [], []
        for batch in _batches(model, mapper, dataset_dicts, input_size, batch_size):
            cls_maps = model.head(batch.features, batch.delta_maps)[0]
            cls_logits = flatten_anchor_maps(cls_maps, model.num_classes + 1).float()
            targets, pos, negatives, matched = model.label_promoted(
                batch.promoted(model), batch.logits, batch.gts)
            right = cls_logits.softmax(dim=-1).gather(-1, targets[..., None])[..., 0]
            level = _anchor_levels(model, batch.features).expand_as(pos)
            group = level * len(SIZES) + _size_index(matched, batch.area_scale)
            probs.append(right[pos].cpu())
            groups.append(group[pos].cpu())
            labels.append(torch.where(pos | negatives, targets, -1).cpu())
        labels = torch.cat(labels)
        rows.append({"checkpoint": path, "iteration": iteration,
                     **_right_class_probability(torch.cat(probs), torch.cat(groups), levels)})
        if previous is not None:
            flips.append({"from": rows[-2]["checkpoint"], "to": path,
                          **_label_flips(previous, labels, model.num_classes)})
        previous = labels
    return {"num_images": len(dataset_dicts), "levels": levels, "sizes": list(SIZES),
            "checkpoints": rows, "label_flips": flips}


def _right_class_probability(probs, groups, levels):
    """Means of ``probs`` (one per positive) over the positives of each (level, size) group
    (``groups`` = level index * len(SIZES) + size index), of each level, size, and overall;
    None where there is no positive."""
    shape = (len(levels), len(SIZES))
    counts = torch.bincount(groups, minlength=shape[0] * shape[1]).view(shape).double()
    sums = torch.bincount(groups, probs.double(), minlength=shape[0] * shape[1]).view(shape)

    def mean(selection):
        return _ratio(sums[selection].sum(), counts[selection].sum())

    return {
        "num_positives": int(counts.sum()),
        "right_class_probability": mean(slice(None)),
        "by_level": {lvl: mean(i) for i, lvl in enumerate(levels)},
        "by_size": {size: mean((slice(None), j)) for j, size in enumerate(SIZES)},
        "by_level_and_size": {lvl: {size: mean((i, j)) for j, size in enumerate(SIZES)}
                              for i, lvl in enumerate(levels)},
        "num_positives_by_level_and_size": {lvl: {size: int(counts[i, j])
                                                  for j, size in enumerate(SIZES)}
                                            for i, lvl in enumerate(levels)},
    }


def _label_flips(before, after, num_classes):
    """Fractions of changed training labels (class, background = ``num_classes``, ignored = -1)
    over all anchors and over the anchors positive in ``before`` or ``after``."""
    changed = before != after
    positive = ((before >= 0) & (before < num_classes)) | ((after >= 0) & (after < num_classes))
    return {"fraction_of_anchors": _ratio(changed.sum(), changed.numel()),
            "fraction_of_positives": _ratio(changed[positive].sum(), positive.sum())}


def _ratio(numerator, denominator):
    """numerator / denominator as a float; None for a zero denominator."""
    return float(numerator) / float(denominator) if denominator else None


QUANTILES = (0.1, 0.5, 0.9)


def _short_sides(boxes: np.ndarray) -> np.ndarray:
    return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def augmentation_statistics(mapper, dataset_dicts, input_size):
    """Map every dict once; returns (statistics dict, list of mapped samples)."""
    before, after, counts_before, counts_after, samples = [], [], [], [], []
    for d in dataset_dicts:
        boxes = gt_boxes_and_classes(d)[0].numpy().astype(np.float64)
        out = mapper(d)
        out_boxes = out["instances"].gt_boxes.tensor.numpy()
        before.append(_short_sides(boxes) / np.array([d["width"], d["height"]]).min())
        after.append(_short_sides(out_boxes) / input_size)
        counts_before.append(len(boxes))
        counts_after.append(len(out_boxes))
        samples.append(out)
    before, after = np.concatenate(before), np.concatenate(after)

    def quantiles(x):
        return {f"q{int(q * 100)}": float(np.quantile(x, q)) if len(x) else None for q in QUANTILES}

    counts_before, counts_after = np.array(counts_before), np.array(counts_after)
    stats = {
        "num_images": len(samples),
        "boxes_per_image_before": float(np.mean(counts_before)),
        "boxes_per_image_after": float(np.mean(counts_after)),
        "fraction_images_losing_boxes": float(np.mean(counts_after < counts_before)),
        "fraction_images_without_boxes_after": float(np.mean(counts_after == 0)),
        "short_side_over_image_before": quantiles(before),
        "short_side_over_input_after": quantiles(after),
    }
    return stats, samples
