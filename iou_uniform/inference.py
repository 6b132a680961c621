"""Test-time scoring of IoU-uniform R-CNN (paper §3.2, Fig. 5): the class probability p_c
is thresholded alone, the detection score is p_c × u (or p_c), then per-class NMS."""
import torch

from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances

__all__ = ["SCORE_MODES", "candidate_scores", "iou_uniform_inference",
           "iou_uniform_inference_single_image"]

SCORE_MODES = ("cls_x_iou", "cls")


def iou_uniform_inference(boxes, probs, ious, image_shapes, score_mode, score_thresh,
                          nms_thresh, topk_per_image):
    """Per-image lists of boxes (R, 4), probs (R, C+1) and ious (R,) → list[Instances]."""
    return [
        iou_uniform_inference_single_image(b, p, u, shape, score_mode, score_thresh,
                                           nms_thresh, topk_per_image)
        for b, p, u, shape in zip(boxes, probs, ious, image_shapes)
    ]


def iou_uniform_inference_single_image(boxes, probs, ious, image_shape, score_mode,
                                       score_thresh, nms_thresh, topk_per_image):
    """One image: keep (RoI, class c) with p_c > score_thresh; score = p_c · u ("cls_x_iou") or
    p_c ("cls"); NMS per class; the top ``topk_per_image`` by score.

    Returns ``Instances`` with ``pred_boxes``, ``scores``, ``pred_classes``, ``pred_ious``
    (the u of each detection's RoI, whatever the score mode).
    """
    rois, classes, scores = candidate_scores(boxes, probs, ious, score_mode, score_thresh)
    keep = batched_nms(boxes[rois], scores, classes, nms_thresh)
    if topk_per_image >= 0:
        keep = keep[:topk_per_image]
    rois, classes = rois[keep], classes[keep]
    result = Instances(image_shape)
    result.pred_boxes = Boxes(boxes[rois])
    result.scores = scores[keep]
    result.pred_classes = classes
    result.pred_ious = ious[rois]
    return result


def candidate_scores(boxes, probs, ious, score_mode, score_thresh):
    """The scored (RoI, class c) pairs of one image before NMS: those with finite inputs and
    p_c > score_thresh (the threshold is on p alone, §3.2), scored p_c · u ("cls_x_iou") or
    p_c ("cls").

    Args:
        boxes (Tensor): (R, 4) refined boxes; probs: (R, C+1) softmax; ious: (R,) u.
    Returns:
        rois, classes, scores (Tensor): (K,) each; ``rois`` index the R inputs.
    """
    if score_mode not in SCORE_MODES:
        raise ValueError(f"score mode must be one of {SCORE_MODES}, got {score_mode!r}")
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(probs).all(dim=1)
    valid &= torch.isfinite(ious)
    fg = probs[:, :-1]
    rois, classes = ((fg > score_thresh) & valid[:, None]).nonzero(as_tuple=True)
    scores = fg[rois, classes]
    if score_mode == "cls_x_iou":
        scores = scores * ious[rois]
    return rois, classes, scores
