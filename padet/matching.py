"""Anchor-GT matching of PADet, shared by the APM and the detection module (paper §3, "Anchor
Design and Matching"; the best anchor of each GT is forced positive as in SSD)."""
import torch

from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou

__all__ = ["PADetMatcher"]


class PADetMatcher:
    """SSD matching: every GT's best-IoU anchor is positive and assigned to *that* GT, provided
    that IoU is above 0; any other anchor with IoU >= high to some GT is positive (its best GT);
    IoU < low to every GT is negative; the rest are ignored.

    The forced best anchor is the only low-quality match: detectron2's
    ``allow_low_quality_matches`` would also make every anchor tied at a GT's best IoU positive,
    i.e. every anchor when that GT overlaps none (best IoU 0). A GT that overlaps no anchor has
    no positive.

    ``__call__(gt_boxes, anchors)`` returns (matched GT index (M,), label (M,)) with label 1
    positive, 0 negative, -1 ignored; an image without GT gives all-negative labels.
    """

    def __init__(self, thresholds=(0.3, 0.5)):
        low, high = thresholds
        if not 0 <= low <= high <= 1:
            raise ValueError(f"MODEL.PADET.IOU_THRESHOLDS must be 0 <= low <= high <= 1, "
                             f"got {list(thresholds)}")
        self.matcher = Matcher([low, high], [0, -1, 1], allow_low_quality_matches=False)

    def __call__(self, gt_boxes: Boxes, anchors: Boxes):
        iou = pairwise_iou(gt_boxes, anchors)  # (G, M)
        matches, labels = self.matcher(iou)
        if len(gt_boxes) > 0:
            best_iou, best_anchor = iou.max(dim=1)  # forced: each GT keeps its own best anchor
            gt_idx = torch.arange(len(gt_boxes), device=matches.device)[best_iou > 0]
            best_anchor = best_anchor[best_iou > 0]
            matches[best_anchor] = gt_idx
            labels[best_anchor] = 1
        return matches, labels
