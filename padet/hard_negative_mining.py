"""Hard-negative mining 3:1 per image. The paper does not mention negative sampling; we mine as
SSD, RFBNet and RefineDet do, the detectors whose training settings PADet follows."""
import torch

__all__ = ["hard_negative_mask"]


def hard_negative_mask(losses, positives, candidates, ratio):
    """Negatives kept for the classification loss, per image (row).

    Args:
        losses: (N, M) per-anchor loss used for ranking (detached inside).
        positives: (N, M) bool, the positives of each image.
        candidates: (N, M) bool, the negatives that may be kept (not ignored).
        ratio: keep the min(ratio * max(P_img, 1), #candidates) highest-loss candidates of each
            image; ``ratio`` 0 keeps every candidate. An image without positives keeps ``ratio``
            hard negatives (project decision, so that background-only batches still train the
            classifier; SSD keeps none).
    Returns:
        (N, M) bool mask of the kept negatives.
    """
    if ratio <= 0:
        return candidates.clone()
    ranking = losses.detach().masked_fill(~candidates, float("-inf"))
    order = ranking.argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)
    num_keep = torch.minimum(ratio * positives.sum(dim=1).clamp(min=1), candidates.sum(dim=1))
    return (rank < num_keep[:, None]) & candidates
