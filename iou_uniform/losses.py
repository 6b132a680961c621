"""Losses of the regression + IoU tower of IoU-uniform R-CNN (paper Eq. 2, §3.1-3.2)."""
import torch
from fvcore.nn import smooth_l1_loss

__all__ = ["interval_weights", "interval_weighted_reg_loss", "iou_prediction_loss"]


def interval_weights(ious, boundaries, weights):
    """w(t) of Eq. 2: ``weights[j]`` for t in (boundaries[j], boundaries[j+1]].

    Targets at or below the first boundary take ``weights[0]``, targets above the last one
    ``weights[-1]`` (e.g. positive RPN RoIs with IoU exactly 0.5).
    """
    if len(weights) != len(boundaries) - 1:
        raise ValueError(
            f"{len(weights)} regression interval weights for {len(boundaries) - 1} intervals"
        )
    inner = ious.new_tensor([float(b) for b in boundaries[1:-1]])
    bins = torch.bucketize(ious, inner, right=False)  # b[j-1] < t <= b[j] -> j
    return ious.new_tensor([float(w) for w in weights])[bins]


def interval_weighted_reg_loss(pred_deltas, gt_deltas, ious, boundaries, weights, beta):
    """L_reg = (1 / 4N) Σ_i Σ_c w(t_i) smoothL1_β(δ_ic - δ*_ic) (Eq. 2); 0 (connected) if N = 0."""
    if pred_deltas.numel() == 0:
        return pred_deltas.sum() * 0.0
    w = interval_weights(ious, boundaries, weights)
    loss = smooth_l1_loss(pred_deltas, gt_deltas, beta, reduction="none")
    return (loss * w[:, None]).mean()


def iou_prediction_loss(pred_ious, target_ious, beta):
    """L_iou = (1 / N) Σ_i smoothL1_β(u_i - t_i) over positives; 0 (connected) if N = 0."""
    if pred_ious.numel() == 0:
        return pred_ious.sum() * 0.0
    return smooth_l1_loss(pred_ious, target_ious, beta, reduction="mean")
