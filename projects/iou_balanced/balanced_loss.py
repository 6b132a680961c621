"""The IoU-balanced losses of one detector head (Eq. 3-6), or the plain ones where disabled.

:class:`IoUBalancedLoss` holds the options of ``MODEL.IOU_BALANCED`` and the ``w_loc`` state
and assembles the losses of :mod:`.losses` the same way for every host (IoU-balanced
RetinaNet, the Faster R-CNN box head, PADet's detection head)::

    ib = IoUBalancedLoss(**iou_balanced_options(cfg))
    pos_iou = ib.regressed_iou(box2box_transform, pos_deltas, pos_boxes, pos_gt_boxes)
    loss_cls = ib.cross_entropy(logits, gt_classes, positives, pos_iou)
    loss_loc = ib.localization(pos_deltas, pos_gt_deltas, pos_iou, beta=1.0)
"""
import torch
from fvcore.nn import sigmoid_focal_loss_jit, smooth_l1_loss

from detectron2.layers import cross_entropy

from .config import NORMALIZER_SCOPES
from .losses import (
    IoUBalancedLocWeight,
    iou_balanced_cross_entropy,
    iou_balanced_sigmoid_focal_loss,
    iou_balanced_smooth_l1_loss,
    regressed_iou,
)

__all__ = ["IoUBalancedLoss"]


class IoUBalancedLoss:
    """The classification (Eq. 3-4) and localization (Eq. 5-6) losses of one head, each either
    IoU-balanced or, when its branch is disabled (Table 2 / Table 7 ablations), the plain loss.

    Not an ``nn.Module``: its only state, ``loc_weight`` (the :class:`IoUBalancedLocWeight` of
    Eq. 6-7, whose "calibrate" buffers are checkpointed), is registered by the host under the
    host's own attribute name, e.g. ``self.loc_weight = self.iou_balanced.loc_weight``.

    Every method takes the host's tensors as they are; ``pos_iou`` is the (P,) output of
    :meth:`regressed_iou` for the P positives, in the order of a boolean mask ``positives``.
    """

    def __init__(self, *, cls_enabled=True, loc_enabled=True, eta=1.5, lam=1.5,
                 w_loc_mode="fixed", w_loc=3.049, normalizer_scope="batch"):
        """
        Args:
            cls_enabled, loc_enabled (bool): IoU-balanced classification (Eq. 3-4) /
                localization (Eq. 5-6) loss; False gives the plain loss.
            eta (float): eta of Eq. 4. lam (float): lambda of Eq. 6.
            w_loc_mode (str), w_loc (float): see :class:`IoUBalancedLocWeight`.
            normalizer_scope (str): scope of Eq. 4's normaliser, "batch" or "level" (per FPN
                level; the host builds the level of each sample).
        """
        if normalizer_scope not in NORMALIZER_SCOPES:
            raise ValueError(f"normalizer_scope must be one of {NORMALIZER_SCOPES}, "
                             f"got {normalizer_scope!r}")
        self.cls_enabled, self.loc_enabled = cls_enabled, loc_enabled
        self.eta, self.lam, self.normalizer_scope = eta, lam, normalizer_scope
        self.loc_weight = IoUBalancedLocWeight(w_loc_mode, w_loc, lam)

    @classmethod
    def attach(cls, head, box_reg_loss_type_key, **options):
        """Build the helper for a detectron2 head (``FastRCNNOutputLayers``, ``RetinaNet``) as
        ``head.iou_balanced``: check the head's ``box_reg_loss_type`` (config key
        ``box_reg_loss_type_key``) and register ``loc_weight`` as ``head.loc_weight`` (its
        checkpoint keys ``...loc_weight.*``). ``options``: this class's keyword arguments."""
        head.iou_balanced = cls(**options)
        head.iou_balanced.check_box_reg_loss_type(head.box_reg_loss_type, box_reg_loss_type_key)
        head.loc_weight = head.iou_balanced.loc_weight
        return head.iou_balanced

    def check_box_reg_loss_type(self, box_reg_loss_type, config_key):
        """Raise ValueError if the localization loss is IoU-balanced but the host's box
        regression loss (config key ``config_key``) is not the smooth-L1 that Eq. 5-6 weights."""
        if self.loc_enabled and box_reg_loss_type != "smooth_l1":
            raise ValueError("the IoU-balanced localization loss weights smooth-L1: set "
                             f"{config_key} 'smooth_l1' or MODEL.IOU_BALANCED.LOC_ENABLED "
                             f"False (got {box_reg_loss_type!r})")

    def regressed_iou(self, box2box_transform, pred_deltas, boxes, gt_boxes):
        """The positives' regressed IoUs (the paper's ``iou_i``), see :func:`regressed_iou`.

        Args:
            box2box_transform: the host's box coder.
            pred_deltas, boxes, gt_boxes (Tensor): (P, 4) the positives' predicted deltas, the
                anchors / proposals they are relative to, and their assigned GT boxes (XYXY).

        Returns:
            Tensor or None: (P,) detached float32 IoUs; None when neither loss is IoU-balanced
            (nothing reads them).
        """
        if not (self.cls_enabled or self.loc_enabled):
            return None
        return regressed_iou(box2box_transform, pred_deltas, boxes, gt_boxes)

    @staticmethod
    def positive_iou_vector(pos_iou, positives):
        """Per-sample IoUs: ``pos_iou`` at the ``positives`` (a bool mask), 0 elsewhere."""
        iou = torch.zeros(positives.shape, device=pos_iou.device)
        iou[positives] = pos_iou
        return iou

    def cross_entropy(self, logits, gt_classes, positives, pos_iou, *, reduction="mean"):
        """Softmax cross-entropy, IoU-balanced (Eq. 3-4) if ``cls_enabled``.

        Args:
            logits (Tensor): (N, C + 1) logits, background last.
            gt_classes (Tensor): (N,) int64 labels in ``[0, C]``.
            positives (Tensor): (N,) bool, the samples with labels in ``[0, C)``.
            pos_iou (Tensor): (P,) their regressed IoUs (unused if ``cls_enabled`` is False).
            reduction (str): "mean" over the N samples (0 for N = 0), "sum" or "none".
        """
        if not self.cls_enabled:
            return cross_entropy(logits, gt_classes, reduction=reduction)
        iou = self.positive_iou_vector(pos_iou, positives)
        return iou_balanced_cross_entropy(logits, gt_classes, iou, eta=self.eta,
                                          reduction=reduction)

    def sigmoid_focal_loss(self, logits, targets, positives, pos_iou, *, alpha, gamma,
                           groups=None):
        """Summed sigmoid focal loss, IoU-balanced (Eq. 3-4) if ``cls_enabled``.

        Args:
            logits, targets (Tensor): (R, C) logits and one-hot float targets.
            positives (Tensor): (R,) bool, the rows with a 1 in ``targets``.
            pos_iou (Tensor): (P,) their regressed IoUs (unused if ``cls_enabled`` is False).
            alpha, gamma (float): focal loss parameters.
            groups (Tensor or None): (R,) int64 FPN level of each row for one Eq. 4
                normaliser per level (``normalizer_scope`` "level"); None: one for all.
        """
        if not self.cls_enabled:
            return sigmoid_focal_loss_jit(logits, targets, alpha=alpha, gamma=gamma,
                                          reduction="sum")
        iou = self.positive_iou_vector(pos_iou, positives)
        return iou_balanced_sigmoid_focal_loss(logits, targets, iou, eta=self.eta, alpha=alpha,
                                               gamma=gamma, groups=groups)

    def localization(self, pred_deltas, gt_deltas, pos_iou, *, beta):
        """Summed smooth-L1 of the positives, IoU-balanced (Eq. 5-6, with ``loc_weight``'s
        ``w_loc``) if ``loc_enabled``.

        Args:
            pred_deltas, gt_deltas (Tensor): (P, 4) predicted and GT deltas of the positives.
            pos_iou (Tensor): (P,) their regressed IoUs (unused if ``loc_enabled`` is False).
            beta (float): the smooth-L1 knee.
        """
        if not self.loc_enabled:
            return smooth_l1_loss(pred_deltas, gt_deltas, beta, reduction="sum")
        return iou_balanced_smooth_l1_loss(pred_deltas, gt_deltas, pos_iou, lam=self.lam,
                                           beta=beta, w_loc=self.loc_weight)
