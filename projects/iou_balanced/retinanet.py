"""IoU-balanced RetinaNet: detectron2's RetinaNet with the losses of Eq. 3-6 (paper Table 1-4)."""
import torch
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.structures import Boxes
from detectron2.utils.events import get_event_storage

from .balanced_loss import IoUBalancedLoss
from .config import iou_balanced_options

__all__ = ["IoUBalancedRetinaNet"]


@META_ARCH_REGISTRY.register()
class IoUBalancedRetinaNet(RetinaNet):
    """RetinaNet whose positives' focal loss is weighted by the IoU-balanced classification loss
    (Eq. 3-4) and whose smooth-L1 is the IoU-balanced localization loss (Eq. 5-6).

    Only :meth:`losses` changes: the architecture, the anchor labelling, the EMA normaliser and
    inference are RetinaNet's, so inference time is unchanged and weights are interchangeable
    with a plain RetinaNet. ``iou`` is the IoU of each positive anchor's decoded current
    prediction with its assigned GT (the regressed IoU).
    """

    @configurable
    def __init__(
        self,
        *,
        cls_enabled=True,
        loc_enabled=True,
        eta=1.5,
        lam=1.5,
        w_loc_mode="fixed",
        w_loc=3.049,
        normalizer_scope="batch",
        **kwargs,
    ):
        """
        Args:
            cls_enabled, loc_enabled (bool): use the IoU-balanced classification (Eq. 3-4) /
                localization (Eq. 5-6) loss; False gives RetinaNet's plain loss.
            eta (float): eta of Eq. 4. lam (float): lambda of Eq. 6.
            w_loc_mode (str), w_loc (float): see :class:`IoUBalancedLocWeight`.
            normalizer_scope (str): "batch" (one Eq. 4 normaliser over every positive of the
                batch) or "level" (one per FPN level, as the authors' code).
            kwargs: RetinaNet's arguments.
        """
        super().__init__(**kwargs)
        IoUBalancedLoss.attach(
            self, "MODEL.RETINANET.BBOX_REG_LOSS_TYPE", cls_enabled=cls_enabled,
            loc_enabled=loc_enabled, eta=eta, lam=lam, w_loc_mode=w_loc_mode, w_loc=w_loc,
            normalizer_scope=normalizer_scope)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(iou_balanced_options(cfg))
        return ret

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """RetinaNet's ``losses`` (same arguments and normaliser) with Eq. 3-6.

        Returns:
            dict[str, Tensor]: "loss_cls" and "loss_box_reg".
        """
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # (N, R)
        valid_mask = gt_labels >= 0
        pos_mask = valid_mask & (gt_labels != self.num_classes)
        num_pos_anchors = pos_mask.sum().item()
        get_event_storage().put_scalar("num_pos_anchors", num_pos_anchors / num_images)
        normalizer = self._ema_update("loss_normalizer", max(num_pos_anchors, 1), 100)

        # the positives' current predictions, anchors and GT boxes, and their regressed IoUs
        all_anchors = Boxes.cat(anchors).tensor  # (R, 4)
        pos_anchors = all_anchors.expand(num_images, -1, -1)[pos_mask]
        pos_gt_boxes = torch.stack(gt_boxes)[pos_mask]
        pos_deltas = cat(pred_anchor_deltas, dim=1)[pos_mask]
        ib = self.iou_balanced
        pos_iou = ib.regressed_iou(self.box2box_transform, pos_deltas, pos_anchors, pos_gt_boxes)

        logits = cat(pred_logits, dim=1)[valid_mask]
        targets = F.one_hot(gt_labels[valid_mask], num_classes=self.num_classes + 1)[:, :-1]
        targets = targets.to(logits.dtype)  # no loss for the last (background) class
        levels = None
        if ib.cls_enabled and ib.normalizer_scope == "level":
            levels = torch.cat([torch.full((len(a),), i, device=logits.device)
                                for i, a in enumerate(anchors)])
            levels = levels.long().expand(num_images, -1)[valid_mask]
        loss_cls = ib.sigmoid_focal_loss(
            logits, targets, pos_mask[valid_mask], pos_iou, alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma, groups=levels,
        )

        if ib.loc_enabled:
            gt_deltas = self.box2box_transform.get_deltas(pos_anchors, pos_gt_boxes)
            loss_box_reg = ib.localization(pos_deltas, gt_deltas, pos_iou,
                                           beta=self.smooth_l1_beta)
        else:  # detectron2's loss (any BBOX_REG_LOSS_TYPE)
            loss_box_reg = _dense_box_regression_loss(
                anchors, self.box2box_transform, pred_anchor_deltas, gt_boxes, pos_mask,
                box_reg_loss_type=self.box_reg_loss_type, smooth_l1_beta=self.smooth_l1_beta,
            )
        return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box_reg / normalizer}
