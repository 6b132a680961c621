"""PRM RoI sampling (paper Sec. 3.1-3.2): label the proposals once, then let every parallel
R-CNN module draw its own "soft" sample from them at its own positive fraction."""
import numpy as np
import torch

from detectron2.modeling.sampling import subsample_labels
from detectron2.structures import pairwise_iou
from detectron2.utils.events import get_event_storage

__all__ = ["label_proposals", "sample_proposals"]


def label_proposals(proposals, targets, matcher, num_classes):
    """Match every proposal of every image to the GT once, without subsampling.

    Sets ``gt_classes`` (background = ``num_classes``, ignored = -1) and, on images with GT,
    every other ``gt_*`` field of the matched GT instance (as ``label_and_sample_proposals``).
    Returns the same Instances.
    """
    for props, gt in zip(proposals, targets):
        matched_idxs, matched_labels = matcher(pairwise_iou(gt.gt_boxes, props.proposal_boxes))
        if len(gt) > 0:
            gt_classes = gt.gt_classes[matched_idxs]
            gt_classes[matched_labels == 0] = num_classes
            gt_classes[matched_labels == -1] = -1
        else:
            gt_classes = torch.full_like(matched_idxs, num_classes)
        props.gt_classes = gt_classes
        if len(gt) > 0:
            for name, value in gt.get_fields().items():
                if name.startswith("gt_") and not props.has(name):
                    props.set(name, value[matched_idxs])
    return proposals


def sample_proposals(proposals, batch_size_per_image, positive_fraction, num_classes, log_name):
    """One module's "soft" sample per image: min(#pos, int(B * f)) positives, negatives fill
    the rest of the B RoIs (as far as there are any); positives are never duplicated.

    Logs the mean per-image counts as ``<log_name>`` with ``{}`` -> ``fg`` / ``bg``.
    """
    sampled, num_fg, num_bg = [], [], []
    for props in proposals:
        pos, neg = subsample_labels(
            props.gt_classes, batch_size_per_image, positive_fraction, num_classes
        )
        sampled.append(props[torch.cat([pos, neg])])
        num_fg.append(pos.numel())
        num_bg.append(neg.numel())
    storage = get_event_storage()
    storage.put_scalar(log_name.format("fg"), np.mean(num_fg))
    storage.put_scalar(log_name.format("bg"), np.mean(num_bg))
    return sampled
