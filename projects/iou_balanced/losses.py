"""IoU-balanced classification and localization losses (Wu, Yang, Wang, Li; journal Eq. 3-8).

Plain functions on tensors, shared by every head that uses them (RetinaNet, the Faster R-CNN
box head, PADet's detection head), plus one small module, :class:`IoUBalancedLocWeight`, that
holds the state of ``w_loc`` (Eq. 6-7) so that a calibrated value is checkpointed.

Every weight below is computed under ``no_grad`` (it is *detached*): the gradient of a
weighted loss w.r.t. the predictions is the weight times the gradient of the plain loss
(Eq. 8). ``iou`` is always the *regressed* IoU of :func:`regressed_iou`.

Typical use in a head (positives only; ``B`` a detectron2 ``Box2BoxTransform``)::

    iou = regressed_iou(B, pos_pred_deltas, pos_anchors, pos_gt_boxes)
    loss_cls = iou_balanced_cross_entropy(logits, gt_classes, iou_per_sample, eta=1.3)
    w_loc = loc_weight(per_sample_smooth_l1.detach(), iou)       # an IoUBalancedLocWeight
    loss_loc = iou_balanced_smooth_l1_loss(pos_pred_deltas, pos_gt_deltas, iou,
                                           lam=1.5, beta=1.0, w_loc=w_loc)
"""
import logging

import torch
from fvcore.nn import sigmoid_focal_loss_jit, smooth_l1_loss
from torch import nn
from torch.nn import functional as F

from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

__all__ = [
    "W_LOC_MODES",
    "regressed_iou",
    "iou_balanced_cls_weights",
    "iou_balanced_sigmoid_focal_loss",
    "iou_balanced_cross_entropy",
    "normalized_w_loc",
    "iou_balanced_smooth_l1_loss",
    "IoUBalancedLocWeight",
]

logger = logging.getLogger("detectron2.iou_balanced")  # printed by default_setup

W_LOC_MODES = ("fixed", "normalized", "calibrate")


@torch.no_grad()
def regressed_iou(box2box_transform, pred_deltas, anchors, gt_boxes):
    """IoU of each decoded prediction with its assigned GT box: the paper's "iou_i" of Eq. 4
    and Eq. 6, the regressed IoU (as in the authors' code).

    Args:
        box2box_transform: the host detector's box coder (detectron2 ``Box2BoxTransform``).
        pred_deltas (Tensor): (P, 4) current predicted deltas of the P positive samples.
        anchors (Tensor): (P, 4) their anchors / proposals, XYXY.
        gt_boxes (Tensor): (P, 4) their assigned GT boxes, XYXY.

    Returns:
        Tensor: (P,) float32 IoUs in [0, 1], detached (computed under ``no_grad`` in float32,
        also under AMP).
    """
    pred_boxes = box2box_transform.apply_deltas(pred_deltas.float(), anchors.float())
    iou = matched_pairwise_iou(Boxes(pred_boxes), Boxes(gt_boxes.float()))
    return iou.nan_to_num(0.0).clamp_(0.0, 1.0)


def _sum_ratio(num, den):
    """num / den where den > 0, else 1 (no positive with a non-zero loss: nothing to rescale)."""
    return torch.where(den > 0, num / den.clamp(min=torch.finfo(den.dtype).tiny), num.new_ones(()))


@torch.no_grad()
def iou_balanced_cls_weights(pos_loss, pos_iou, eta, groups=None, num_groups=None):
    """Eq. 4: weights ``w_i = iou_i^eta * sum_j CE_j / sum_j iou_j^eta CE_j`` of the positives.

    The normaliser keeps the positives' loss sum unchanged (per group):
    ``sum_i w_i * CE_i == sum_i CE_i``. Computed in float32 under ``no_grad`` (detached).

    Args:
        pos_loss (Tensor): (P,) the positives' unweighted classification losses ``CE_i``.
        pos_iou (Tensor): (P,) their regressed IoUs.
        eta (float): the paper's eta (eta = 0 gives all-ones weights).
        groups (Tensor or None): (P,) int64 group index of each positive (e.g. its FPN level)
            for one normaliser per group (``NORMALIZER_SCOPE: "level"``); None: one for all.
        num_groups (int or None): number of groups (default ``groups.max() + 1``).

    Returns:
        Tensor: (P,) float32 weights, ``requires_grad == False``. If the positives' weighted
        loss sum is 0 the normaliser is 1.
    """
    loss = pos_loss.detach().float()
    scaled = pos_iou.float().pow(eta)
    if groups is None:
        return scaled * _sum_ratio(loss.sum(), (scaled * loss).sum())
    n = int(num_groups if num_groups is not None else (groups.max() + 1 if groups.numel() else 0))
    num = loss.new_zeros(n).index_add_(0, groups, loss)
    den = loss.new_zeros(n).index_add_(0, groups, scaled * loss)
    return scaled * _sum_ratio(num, den)[groups]


def iou_balanced_sigmoid_focal_loss(
    logits, targets, iou, *, eta, alpha=0.25, gamma=2.0, groups=None, reduction="sum"
):
    """IoU-balanced sigmoid focal loss (Eq. 3-4 on top of focal loss; RetinaNet).

    The element-wise focal loss ``FL`` (fvcore's ``sigmoid_focal_loss_jit``, as detectron2)
    is multiplied by a detached weight matrix ``W``: ``W = iou^eta * Z`` where
    ``targets == 1`` (a positive anchor's GT-class entry), 1 elsewhere (negatives and a
    positive's other classes), with ``Z = sum_{T=1} FL / sum_{T=1} iou^eta FL`` (Eq. 4), per
    batch or per group.

    Args:
        logits (Tensor): (R, C) logits of the valid (non-ignored) anchors.
        targets (Tensor): (R, C) one-hot float targets (all zero for a negative anchor).
        iou (Tensor): (R,) regressed IoU of each anchor; only read where ``targets`` has a 1.
        eta (float): the paper's eta; alpha, gamma: focal loss parameters.
        groups (Tensor or None): (R,) int64 group of each anchor (FPN level) for a per-level
            ``Z``; None: one ``Z`` over all positives of the batch.
        reduction (str): "sum" (what RetinaNet divides by its normaliser), "none" or "mean".
    """
    fl = sigmoid_focal_loss_jit(logits, targets, alpha=alpha, gamma=gamma, reduction="none")
    pos = targets > 0.5
    if pos.any():
        rows = pos.nonzero()[:, 0]
        g = groups[rows] if groups is not None else None
        n = int(groups.max()) + 1 if groups is not None else None
        w = torch.ones_like(fl, dtype=torch.float32)
        w[pos] = iou_balanced_cls_weights(fl[pos], iou[rows], eta, groups=g, num_groups=n)
        fl = fl * w.to(fl.dtype)
    return _reduce(fl, reduction)


def iou_balanced_cross_entropy(logits, gt_classes, iou, *, eta, reduction="mean"):
    """IoU-balanced softmax cross-entropy (Eq. 3-4; Faster R-CNN box head, PADet).

    ``CE_i`` per sample; the positives (labels in ``[0, C)``, background is ``C``, the last
    logit) are multiplied by the detached ``w_i`` of :func:`iou_balanced_cls_weights`,
    negatives keep weight 1, so the positives' loss sum is unchanged.

    Args:
        logits (Tensor): (N, C + 1) logits, background last (detectron2's layout).
        gt_classes (Tensor): (N,) int64 labels in ``[0, C]``.
        iou (Tensor): (N,) regressed IoU of each sample; only read for the positives.
        eta (float): the paper's eta.
        reduction (str): "mean" over all N samples (detectron2's Fast R-CNN loss; 0 for N = 0),
            "sum", or "none" (the weighted per-sample losses, e.g. before hard-negative mining).
    """
    ce = F.cross_entropy(logits, gt_classes, reduction="none")
    pos = (gt_classes >= 0) & (gt_classes < logits.shape[1] - 1)
    if pos.any():
        w = torch.ones_like(ce, dtype=torch.float32)
        w[pos] = iou_balanced_cls_weights(ce[pos], iou[pos], eta)
        ce = ce * w.to(ce.dtype)
    return _reduce(ce, reduction)


def _reduce(loss, reduction):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / max(loss.shape[0], 1)  # 0 (connected to the graph) when empty
    raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")


@torch.no_grad()
def normalized_w_loc(per_sample_loss, iou, lam):
    """Eq. 7's factor ``w_loc = sum_Pos sum_m sL1 / sum_Pos sum_m iou^lambda sL1``.

    Both sums are all-reduced over workers. Returns a float32 0-dim tensor (1 when the
    weighted sum is 0, e.g. no positives on any worker) and the all-reduced positive count.

    Args:
        per_sample_loss (Tensor): (P,) plain smooth-L1 of each positive, summed over x, y, w, h.
        iou (Tensor): (P,) regressed IoUs. lam (float): the paper's lambda.

    Returns:
        (Tensor, Tensor): the factor, and the number of positives over all workers.
    """
    loss = per_sample_loss.detach().float()
    sums = torch.stack([loss.sum(), (iou.float().pow(lam) * loss).sum(),
                        loss.new_tensor(float(loss.numel()))])
    if comm.get_world_size() > 1:
        torch.distributed.all_reduce(sums)
    return _sum_ratio(sums[0], sums[1]), sums[2]


def iou_balanced_smooth_l1_loss(pred, target, iou, *, lam, beta, w_loc=1.0, reduction="sum"):
    """IoU-balanced localization loss (Eq. 5-6): ``sum_i sum_m w_loc iou_i^lambda sL1_beta``.

    The weight ``w_loc * iou_i^lambda`` is detached, so the gradient w.r.t. ``pred`` is
    ``w * d / beta`` inside the knee and ``w * sign(d)`` outside (Eq. 8). ``sL1_beta`` is
    fvcore's ``smooth_l1_loss`` (the paper's Eq. 2 with delta = beta; beta = 0 is L1).

    Args:
        pred, target (Tensor): (P, 4) predicted and GT deltas of the positives.
        iou (Tensor): (P,) regressed IoUs.
        lam (float): the paper's lambda. beta (float): the smooth-L1 knee.
        w_loc (float, Tensor or IoUBalancedLocWeight): the constant of Eq. 6, or the module
            that holds it ("fixed", "normalized" or "calibrate"); the module is given the
            plain per-sample losses and the IoUs.
        reduction (str): "sum" (the hosts divide by their own normaliser), "none" or "mean".
    """
    loss = smooth_l1_loss(pred, target, beta, reduction="none")
    if isinstance(w_loc, IoUBalancedLocWeight):
        w_loc = w_loc(loss.detach().sum(dim=1), iou)
    with torch.no_grad():
        w = (iou.float().pow(lam) * w_loc).to(loss.dtype)
    return _reduce(loss * w[:, None], reduction)


class IoUBalancedLocWeight(nn.Module):
    """The ``w_loc`` of Eq. 6, in one of three modes (``MODEL.IOU_BALANCED.W_LOC_MODE``).

    - ``"fixed"``: the constant ``w_loc`` (the paper's manual value, e.g. 3.049 for RetinaNet).
    - ``"normalized"``: Eq. 7 at every iteration (all-reduced sums).
    - ``"calibrate"``: Eq. 7 once, at the first training iteration whose all-reduced positive
      count is >= 1 (the paper's manual first-iteration procedure, automated), then frozen.
      The value and a ``calibrated`` flag are persistent buffers, so a checkpoint restores
      them and a resumed run does not recalibrate. Eval never calibrates.

    Pass it as ``w_loc`` to :func:`iou_balanced_smooth_l1_loss`, or call
    ``forward(per_sample_loss, iou)`` for the detached 0-dim ``w_loc``. In training, the
    "normalized" and "calibrate" modes log ``iou_balanced/w_loc`` to the event storage (so
    they must then run inside an ``EventStorage``).
    """

    def __init__(self, mode="fixed", w_loc=1.0, lam=1.5):
        """
        Args:
            mode (str): "fixed", "normalized" or "calibrate".
            w_loc (float): the constant for "fixed" (ignored by the other modes).
            lam (float): the paper's lambda (used by Eq. 7).
        """
        super().__init__()
        if mode not in W_LOC_MODES:
            raise ValueError(f"W_LOC_MODE must be one of {W_LOC_MODES}, got {mode!r}")
        if mode == "fixed" and not w_loc > 0:
            raise ValueError(f"W_LOC must be > 0 in 'fixed' mode, got {w_loc}")
        self.mode, self.lam, self.fixed_w_loc = mode, float(lam), float(w_loc)
        if mode == "calibrate":
            self.register_buffer("w_loc", torch.tensor(1.0))
            self.register_buffer("calibrated", torch.tensor(False))

    def extra_repr(self):
        return f"mode={self.mode}, lam={self.lam}, w_loc={self.current():.4f}"

    def current(self):
        """The value in use now: the constant, the calibrated value, or 1 before calibration."""
        return self.fixed_w_loc if self.mode == "fixed" else float(getattr(self, "w_loc", 1.0))

    @torch.no_grad()
    def forward(self, per_sample_loss, iou):
        """
        Args:
            per_sample_loss (Tensor): (P,) plain smooth-L1 of each positive, summed over x, y,
                w, h (used by "normalized" and "calibrate").
            iou (Tensor): (P,) regressed IoUs.

        Returns:
            Tensor: 0-dim float32 ``w_loc`` (detached).
        """
        if self.mode == "fixed":
            return torch.tensor(self.fixed_w_loc, device=per_sample_loss.device)
        if self.mode == "normalized":
            w, _ = normalized_w_loc(per_sample_loss, iou, self.lam)
        else:
            if self.training and not bool(self.calibrated):
                factor, num_pos = normalized_w_loc(per_sample_loss, iou, self.lam)
                if num_pos >= 1:  # a zero-positive iteration defers calibration
                    self.w_loc.fill_(factor)
                    self.calibrated.fill_(True)
                    logger.info(f"IoU-balanced localization loss: calibrated w_loc = "
                                f"{float(factor):.4f} (lambda = {self.lam}, "
                                f"{int(num_pos)} positives)")
            w = self.w_loc.clone()
        if self.training:
            get_event_storage().put_scalar("iou_balanced/w_loc", float(w))
        return w
