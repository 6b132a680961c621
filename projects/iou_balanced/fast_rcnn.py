"""IoU-balanced Fast R-CNN box predictor: the second-stage losses of Eq. 3-6 (paper Table 7)."""
import torch

from detectron2.config import configurable
from detectron2.layers import cat, nonzero_tuple
from detectron2.modeling.roi_heads.fast_rcnn import (
    FastRCNNOutputLayers,
    _log_classification_stats,
)

from .balanced_loss import IoUBalancedLoss
from .config import iou_balanced_options

__all__ = ["IoUBalancedFastRCNNOutputLayers"]


class IoUBalancedFastRCNNOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` whose :meth:`losses` are the IoU-balanced softmax cross-entropy
    (Eq. 3-4) and the IoU-balanced smooth-L1 (Eq. 5-6); layers and inference are unchanged.

    ``iou`` of a foreground RoI is the IoU of its decoded current box (the class-agnostic deltas
    or the GT class's, box coder weights ``ROI_BOX_HEAD.BBOX_REG_WEIGHTS``) with its GT box.
    Both losses keep detectron2's normalisation: the number of sampled RoIs.
    """

    @configurable
    def __init__(
        self,
        input_shape,
        *,
        cls_enabled=True,
        loc_enabled=True,
        eta=1.3,
        lam=1.5,
        w_loc_mode="fixed",
        w_loc=2.4,
        normalizer_scope="batch",
        **kwargs,
    ):
        """
        Args:
            input_shape, kwargs: ``FastRCNNOutputLayers``' arguments.
            cls_enabled, loc_enabled (bool): use the IoU-balanced classification /
                localization loss; False gives detectron2's plain loss.
            eta (float): eta of Eq. 4. lam (float): lambda of Eq. 6.
            w_loc_mode (str), w_loc (float): see :class:`IoUBalancedLocWeight`.
            normalizer_scope (str): only "batch" (RoIs have no FPN level of their own).
        """
        super().__init__(input_shape, **kwargs)
        if normalizer_scope != "batch":
            raise ValueError("the Faster R-CNN box head supports only MODEL.IOU_BALANCED."
                             f"NORMALIZER_SCOPE 'batch', got {normalizer_scope!r}")
        IoUBalancedLoss.attach(
            self, "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE", cls_enabled=cls_enabled,
            loc_enabled=loc_enabled, eta=eta, lam=lam, w_loc_mode=w_loc_mode, w_loc=w_loc,
            normalizer_scope=normalizer_scope)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(iou_balanced_options(cfg))
        return ret

    def losses(self, predictions, proposals):
        """
        Args:
            predictions: return values of :meth:`forward()`.
            proposals (list[Instances]): the sampled proposals with ``proposal_boxes``,
                ``gt_classes`` and (if any is foreground) ``gt_boxes``.

        Returns:
            dict[str, Tensor]: "loss_cls" and "loss_box_reg", times ``loss_weight``.
        """
        scores, proposal_deltas = predictions
        device = proposal_deltas.device
        gt_classes = (cat([p.gt_classes for p in proposals], dim=0) if len(proposals)
                      else torch.empty(0, dtype=torch.long, device=device))
        _log_classification_stats(scores, gt_classes)
        if len(proposals):
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            # proposals without "gt_boxes" are all background: their boxes are placeholders
            gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor
                            for p in proposals], dim=0)
        else:
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=device)

        fg_mask = (gt_classes >= 0) & (gt_classes < self.num_classes)
        fg_inds = nonzero_tuple(fg_mask)[0]
        box_dim = proposal_boxes.shape[1]
        if proposal_deltas.shape[1] == box_dim:  # class-agnostic regression
            fg_deltas = proposal_deltas[fg_inds]
        else:
            fg_deltas = proposal_deltas.view(-1, self.num_classes, box_dim)[
                fg_inds, gt_classes[fg_inds]
            ]
        fg_proposals, fg_gt_boxes = proposal_boxes[fg_inds], gt_boxes[fg_inds]
        ib = self.iou_balanced
        fg_iou = ib.regressed_iou(self.box2box_transform, fg_deltas, fg_proposals, fg_gt_boxes)
        loss_cls = ib.cross_entropy(scores, gt_classes, fg_mask, fg_iou)
        if ib.loc_enabled:
            gt_deltas = self.box2box_transform.get_deltas(fg_proposals, fg_gt_boxes)
            loss_box_reg = ib.localization(fg_deltas, gt_deltas, fg_iou, beta=self.smooth_l1_beta)
            loss_box_reg = loss_box_reg / max(gt_classes.numel(), 1.0)  # all sampled RoIs, as d2
        else:  # detectron2's loss (any BBOX_REG_LOSS_TYPE)
            loss_box_reg = self.box_reg_loss(proposal_boxes, gt_boxes, proposal_deltas, gt_classes)
        losses = {"loss_cls": loss_cls, "loss_box_reg": loss_box_reg}
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}
