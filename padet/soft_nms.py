"""Soft-NMS on tensors, batched over classes (Bodla et al., "Soft-NMS -- Improving Object
Detection With One Line of Code", ICCV 2017), as PADet's inference uses it (PADet paper §3.3,
"Inference": linear kernel, N_t = 0.3, per class).

torchvision and detectron2 only provide hard NMS. This module implements the greedy soft-NMS
of Bodla et al. (Algorithm 1) for all classes at once:

    repeat, independently for every class:
        pick the remaining box M with the highest (current) score and keep it;
        rescale the score of every other remaining box b of that class by
            linear:   (1 - IoU(M, b))            if IoU(M, b) > Nt, else 1
            gaussian: exp(-IoU(M, b)^2 / sigma)
        drop the boxes whose score fell below the score threshold.

Implementation: the remaining boxes of all classes stay in one flat tensor. Each step selects
the current maximum of every class at once (two ``scatter_reduce`` calls), computes the IoU of
every remaining box with its own class's selection (one ``matched_pairwise_iou`` over n pairs),
decays the scores and compacts the tensors to the boxes still alive. The only Python loop is the
unavoidable greedy sequence of selections. Decay never raises a score, so a class's kept scores
are non-increasing in selection order: the loop runs at most S = min(largest class size, topk)
steps, and once ``topk`` boxes are kept, boxes below the k-th best kept score are dropped (both
exact). Cost: O(S * N) time, usually much less as boxes are dropped, and O(N) memory for N input
boxes (per-class IoU matrices would need O(N^2)).

Differences from Bodla's reference code: IoU uses continuous coordinates (no "+1" pixel
convention); boxes and scores are cast to float32 (also under AMP); boxes already below
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
    ids = torch.nonzero(scores >= score_threshold).squeeze(1)
    if ids.numel() == 0:
        return ids, scores[ids]
    boxes, cur_scores = boxes[ids].float(), scores[ids].float()  # float32, also under AMP
    _, classes, counts = torch.unique(idxs[ids], return_inverse=True, return_counts=True)
    num_classes = len(counts)
    num_steps = int(counts.max())
    if topk > 0:
        num_steps = min(num_steps, topk)

    # The tensors hold only the remaining boxes, in input order (so ties go to the lowest index).
    kept_ids, kept_scores = [], []
    for _ in range(num_steps):
        n = len(cur_scores)
        if n == 0:
            break
        # Select the current maximum of every class.
        class_max = cur_scores.new_full((num_classes,), float("-inf"))
        class_max = class_max.scatter_reduce(0, classes, cur_scores, "amax")
        is_max = cur_scores == class_max[classes]
        candidates = torch.where(is_max, torch.arange(n, device=device), n)
        selected = torch.full((num_classes,), n, dtype=torch.long, device=device)
        selected = selected.scatter_reduce(0, classes, candidates, "amin")
        chosen = selected[selected < n]
        kept_ids.append(ids[chosen])
        kept_scores.append(cur_scores[chosen])

        # Decay every box by its IoU with its own class's selection; drop the selected boxes
        # and those below the score threshold.
        ref = boxes[selected.clamp(max=n - 1)[classes]]
        iou = matched_pairwise_iou(Boxes(boxes), Boxes(ref)).nan_to_num(0.0)
        cur_scores = cur_scores * _decay(iou, method, iou_threshold, sigma)
        remaining = cur_scores >= score_threshold
        remaining[chosen] = False
        if topk > 0 and sum(len(k) for k in kept_scores) >= topk:
            # A box can only lose score, so one already below the k-th best kept score can
            # never enter the output: drop it (exact, and ends the loop early).
            kept_ids, kept_scores = [torch.cat(kept_ids)], [torch.cat(kept_scores)]
            remaining &= cur_scores >= torch.topk(kept_scores[0], topk).values[-1]
        boxes, cur_scores, classes, ids = (t[remaining] for t in (boxes, cur_scores, classes, ids))

    kept_ids = torch.cat(kept_ids)
    kept_scores = torch.cat(kept_scores)
    order = torch.sort(kept_scores, descending=True, stable=True).indices
    if topk > 0:
        order = order[:topk]
    return kept_ids[order], kept_scores[order]
