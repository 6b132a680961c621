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
- :func:`augmentation_statistics`: what the training mapper's SSD augmentation feeds the model
  (boxes per image and box sizes before and after).

Images are read through a ``PADetDatasetMapper``: square-warped to ``INPUT_SIZE``, without
augmentation for the first two.
"""
import numpy as np
import torch
from fvcore.nn import smooth_l1_loss

from d2ext.analysis import gt_boxes_and_classes, pearson_r
from detectron2.structures import Boxes, Instances
from detectron2.structures.boxes import matched_pairwise_iou

from .anchors import flatten_anchor_maps

__all__ = ["anchor_balance", "box_regression", "augmentation_statistics"]

IOU_BINS = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
DELTAS = ("dx", "dy", "dw", "dh")


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


def _batches(model, mapper, dataset_dicts, input_size, batch_size):
    """Per batch: GT Instances, the decoded features, the initial anchors (M, 4), the APM's
    flattened logits (N, M) and its delta maps."""
    for start in range(0, len(dataset_dicts), batch_size):
        dicts = dataset_dicts[start:start + batch_size]
        gts = [_gt_instances(d, input_size).to(model.device) for d in dicts]
        images = model.preprocess_image([mapper(d) for d in dicts])
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.apm.in_features]
        logit_maps, delta_maps = model.apm.predict(features)
        anchors = model.apm.anchors(features, images.tensor.shape[-2:])
        yield gts, features, anchors, model.apm.flatten(logit_maps, None)[0], delta_maps


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
    for gts, features, anchors, logits, delta_maps in _batches(
            model, mapper, dataset_dicts, input_size, batch_size):
        promoted = model.apm.promote(anchors, flatten_anchor_maps(delta_maps, 4))
        initial = anchors.expand(len(gts), -1, -1)
        for name, boxes in (("initial", initial), ("promoted", promoted)):
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
    for gts, features, anchors, logits, delta_maps in _batches(
            model, mapper, dataset_dicts, input_size, batch_size):
        sizes = [x.shape[-2] * x.shape[-1] * a
                 for x, a in zip(features, model.apm.anchor_generator.num_anchors)]
        dev = anchors.device
        level = torch.repeat_interleave(torch.arange(len(sizes), device=dev),
                                        torch.tensor(sizes, device=dev))
        apm_deltas = model.apm.flatten(None, delta_maps)[1]
        if model.apm_reg:
            labels, matched = model.apm.label_anchors(anchors, gts)
            pos = labels == 1
            target = model.apm.box2box_transform.get_deltas(
                anchors.expand(len(gts), -1, -1)[pos], matched[pos])
            found["apm"].append((level.expand_as(pos)[pos], apm_deltas[pos], target))
        ref = model.apm.promote(anchors, apm_deltas, len(gts))
        det_deltas = flatten_anchor_maps(model.head(features, delta_maps)[1], 4)
        _, pos, _, matched = model.label_promoted(ref, logits, gts)
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
