"""Anchor-GT matching of PADet, shared by the APM and the detection module (paper §3, "Anchor
Design and Matching"; the best anchor of each GT is forced positive as in SSD)."""
import torch

from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou

__all__ = ["PADetMatcher"]


class PADetMatcher:
    """SSD matching: every GT's best-IoU anchor is positive and assigned to *that* GT; any other
    anchor with IoU >= high to some GT is positive (its best GT); IoU < low to every GT is
    negative; the rest are ignored.

    ``__call__(gt_boxes, anchors)`` returns (matched GT index (M,), label (M,)) with label 1
    positive, 0 negative, -1 ignored; an image without GT gives all-negative labels.
    """

    def __init__(self, thresholds=(0.3, 0.5)):
        low, high = thresholds
        if not 0 <= low <= high <= 1:
            raise ValueError(f"MODEL.PADET.IOU_THRESHOLDS must be 0 <= low <= high <= 1, "
                             f"got {list(thresholds)}")
        self.matcher = Matcher([low, high], [0, -1, 1], allow_low_quality_matches=True)

    def __call__(self, gt_boxes: Boxes, anchors: Boxes):
        iou = pairwise_iou(gt_boxes, anchors)  # (G, M)
        matches, labels = self.matcher(iou)
        if len(gt_boxes) > 0:
            best_anchor = iou.argmax(dim=1)  # forced: each GT keeps its own best anchor
            matches[best_anchor] = torch.arange(len(gt_boxes), device=matches.device)
            labels[best_anchor] = 1
        return matches, labels
