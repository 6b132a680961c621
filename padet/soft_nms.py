"""Soft-NMS on tensors, batched over classes (Bodla et al., "Soft-NMS -- Improving Object
Detection With One Line of Code", ICCV 2017; PADet §4 / spec §2.7 step 3).

torchvision and detectron2 only provide hard NMS. This module implements the greedy soft-NMS
of Bodla et al. (Algorithm 1) for all classes at once:

    repeat, independently for every class:
        pick the remaining box M with the highest (current) score and keep it;
        rescale the score of every other remaining box b of that class by
            linear:   (1 - IoU(M, b))            if IoU(M, b) > Nt, else 1
            gaussian: exp(-IoU(M, b)^2 / sigma)
        drop the boxes whose score fell below the score threshold.

Implementation: the boxes of all classes stay in one flat tensor. Each step selects the current
maximum of every class at once (two ``scatter_reduce`` calls), computes the IoU of every box
with its own class's selection (one ``matched_pairwise_iou`` over N pairs) and decays the scores.
The only Python loop is the unavoidable greedy sequence of selections, and it runs for
S = min(largest class size, topk) steps, because the kept scores of a class are non-increasing in
selection order (decay never raises a score), so selections beyond a class's first ``topk`` can
never enter the overall top-k. Cost: O(S * N) time and O(N) memory for N input boxes (versus
O(N^2) for per-class IoU matrices).

Differences from Bodla's reference code: IoU uses continuous coordinates (no "+1" pixel
convention) and is computed in float32 (detectron2's ``Boxes``); boxes already below
``score_threshold`` on input are dropped up front (the reference code drops them after the
first decay, except when such a box is the first one picked).
"""
import torch
from detectron2.structures.boxes import Boxes, matched_pairwise_iou

__all__ = ["batched_soft_nms", "SOFT_NMS_METHODS"]

SOFT_NMS_METHODS = ("linear", "gaussian")


def _decay(iou: torch.Tensor, method: str, iou_threshold: float, sigma: float) -> torch.Tensor:
    """Soft-NMS rescoring weights f(IoU) of Bodla et al., Eq. 2 (linear) and Eq. 3 (gaussian)."""
    if method == "linear":
        return torch.where(iou > iou_threshold, 1.0 - iou, torch.ones_like(iou))
    return torch.exp(-(iou * iou) / sigma)


def batched_soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    *,
    method: str = "linear",
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    topk: int = -1,
):
    """
    Per-class soft-NMS over all classes in parallel.

    Args:
        boxes: (N, 4) boxes in XYXY_ABS format.
        scores: (N,) scores.
        idxs: (N,) integer category of each box; boxes of different categories never interact.
        method: "linear" (PADet default) or "gaussian".
        iou_threshold: Nt of the linear kernel (PADet: 0.3); unused by the gaussian kernel.
        sigma: sigma of the gaussian kernel (Bodla et al.: 0.5); unused by the linear kernel.
        score_threshold: boxes whose (decayed) score falls below it are removed (0.001).
        topk: keep at most this many boxes over all classes; <= 0 keeps all.

    Returns:
        keep (LongTensor[K]): indices into the inputs of the kept boxes, by decreasing decayed
            score (ties keep selection order).
        kept_scores (Tensor[K]): their decayed scores, i.e. the score each had when selected.
    """
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"soft-NMS method must be one of {SOFT_NMS_METHODS}, got {method!r}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1] or idxs.shape != boxes.shape[:1]:
        raise ValueError(
            "scores and idxs must have shape (N,) matching boxes (N, 4); got "
            f"boxes {tuple(boxes.shape)}, scores {tuple(scores.shape)}, idxs {tuple(idxs.shape)}"
        )
    if method == "gaussian" and sigma <= 0:
        raise ValueError(f"gaussian soft-NMS needs sigma > 0, got {sigma}")

    device = scores.device
    candidates = torch.nonzero(scores >= score_threshold).squeeze(1)
    if candidates.numel() == 0:
        return candidates, scores[candidates]
    boxes = boxes[candidates]
    cur_scores = scores[candidates].clone()
    _, classes, counts = torch.unique(idxs[candidates], return_inverse=True, return_counts=True)
    num_classes, n = len(counts), len(candidates)
    num_steps = int(counts.max())
    if topk > 0:
        num_steps = min(num_steps, topk)

    alive = torch.ones(n, dtype=torch.bool, device=device)
    arange = torch.arange(n, device=device)
    neg_inf = torch.full_like(cur_scores, float("-inf"))
    kept_idx, kept_scores = [], []
    for _ in range(num_steps):
        # Current maximum of every class; ties go to the lowest index.
        masked = torch.where(alive, cur_scores, neg_inf)
        class_max = neg_inf.new_full((num_classes,), float("-inf"))
        class_max = class_max.scatter_reduce(0, classes, masked, "amax")
        is_max = alive & (masked == class_max[classes])
        selected = torch.full((num_classes,), n, dtype=torch.long, device=device)
        selected = selected.scatter_reduce(0, classes, torch.where(is_max, arange, n), "amin")
        has_box = selected < n
        if not bool(has_box.any()):
            break
        chosen = selected[has_box]
        kept_idx.append(chosen)
        kept_scores.append(cur_scores[chosen])
        alive[chosen] = False

        # Decay every remaining box by its IoU with its own class's selection.
        ref = boxes[selected.clamp(max=n - 1)[classes]]
        iou = matched_pairwise_iou(Boxes(boxes), Boxes(ref)).nan_to_num(0.0)
        cur_scores = torch.where(
            alive, cur_scores * _decay(iou, method, iou_threshold, sigma), cur_scores
        )
        alive &= cur_scores >= score_threshold

    kept_idx = torch.cat(kept_idx)
    kept_scores = torch.cat(kept_scores)
    order = torch.sort(kept_scores, descending=True, stable=True).indices
    if topk > 0:
        order = order[:topk]
    return candidates[kept_idx[order]], kept_scores[order]
