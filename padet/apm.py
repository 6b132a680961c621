"""Anchor Promotion Module (APM, paper §3.1; its loss: §3.3, "Loss Function")."""
import torch
import torch.nn.functional as F
from fvcore.nn import smooth_l1_loss
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage

from .anchors import SSDAnchorGenerator, flatten_anchor_maps
from .hard_negative_mining import hard_negative_mask
from .layers import predictor_init
from .matching import PADetMatcher

__all__ = ["AnchorPromotionModule"]


@PROPOSAL_GENERATOR_REGISTRY.register()
class AnchorPromotionModule(nn.Module):
    """Per decoded level: an anchor-scoring branch (3x3 conv -> A logits, p = sigmoid, "positive
    vs not") and an anchor-adjustment branch (3x3 conv -> 4A deltas (dx, dy, dw, dh); X_l =
    (dx, dy), X_s = (dw, dh)). Promoted anchor = decode(deltas, anchor).

    Loss (§3.3): L_apm = [sum L_b + sum_pos L_r] / N_apm, BCE over positives and hard negatives
    (``hnm_ratio``:1 per image; 0 = every non-ignored negative, §3.3's formula), smooth-L1 on the
    positives' deltas, N_apm = positives in the batch (>= 1); both terms times ``loss_weight``.

    Options of the experiments in docs/padet.md: ``detach_features`` (the branches see detached
    D1..D6, so L_apm trains only the APM's convs, not the encoder-decoder shared with the
    detection module), ``loss_weight`` and ``promote_thresh`` (only anchors whose score p
    reaches it are promoted, the others keep their initial box; 0 promotes every anchor).

    Table 2's single-branch rows build one branch: ``scoring`` (APM_C, L_b only) or
    ``adjustment`` (APM_R, L_r only); the other is not built (its outputs are None, promoted
    anchors = initial anchors without ``adjustment``), so no parameter goes without a gradient.
    """

    @configurable
    def __init__(self, *, in_features, in_channels, anchor_generator, box2box_transform, matcher,
                 hnm_ratio=3, smooth_l1_beta=1.0, scoring=True, adjustment=True,
                 loss_weight=1.0, detach_features=False, promote_thresh=0.0):
        super().__init__()
        self.in_features = list(in_features)
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.matcher = matcher
        self.hnm_ratio = hnm_ratio
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_weight = loss_weight
        self.detach_features = detach_features
        self.promote_thresh = promote_thresh
        num_anchors = anchor_generator.num_anchors
        if len(num_anchors) != len(self.in_features):
            raise ValueError(f"{len(num_anchors)} anchor levels for features {self.in_features}")
        self.objectness = (nn.ModuleList(nn.Conv2d(in_channels, a, 3, padding=1)
                                         for a in num_anchors) if scoring else None)
        self.anchor_deltas = (nn.ModuleList(nn.Conv2d(in_channels, 4 * a, 3, padding=1)
                                            for a in num_anchors) if adjustment else None)
        predictor_init([*(self.objectness or ()), *(self.anchor_deltas or ())])

    @classmethod
    def from_config(cls, cfg, input_shape):
        p = cfg.MODEL.PADET
        in_features = list(input_shape.keys())
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(f"APM needs equal channels on every level, got {channels}")
        return {
            "in_features": in_features,
            "in_channels": channels.pop(),
            "anchor_generator": build_padet_anchor_generator(cfg),
            "box2box_transform": Box2BoxTransform(weights=p.BBOX_REG_WEIGHTS),
            "matcher": PADetMatcher(p.IOU_THRESHOLDS),
            "hnm_ratio": p.APM_HNM_RATIO,
            "smooth_l1_beta": p.SMOOTH_L1_BETA,
            "scoring": p.APM_CLS,
            "adjustment": p.APM_REG,
            "loss_weight": p.APM_LOSS_WEIGHT,
            "detach_features": p.APM_DETACH,
            "promote_thresh": p.APM_PROMOTE_THRESH,
        }

    @property
    def scoring(self):
        """Whether the anchor-scoring branch (APM_C) is built."""
        return self.objectness is not None

    @property
    def adjustment(self):
        """Whether the anchor-adjustment branch (APM_R) is built."""
        return self.anchor_deltas is not None

    def predict(self, features):
        """features: list of (N, C, H, W) -> (logit maps (N, A, H, W), delta maps (N, 4A, H, W));
        None for a branch that is not built. With ``detach_features`` the branches see the
        features detached: no gradient from them reaches the backbone."""
        if self.detach_features:
            features = [x.detach() for x in features]
        logits = [conv(x) for conv, x in zip(self.objectness, features)] if self.scoring else None
        deltas = ([conv(x) for conv, x in zip(self.anchor_deltas, features)]
                  if self.adjustment else None)
        return logits, deltas

    def anchors(self, features, image_size):
        """The initial anchors (M, 4) of a batch padded to ``image_size``."""
        grids = [x.shape[-2:] for x in features]
        return self.anchor_generator(grids, image_size, features[0].device)

    @staticmethod
    def flatten(logit_maps, delta_maps):
        """``predict``'s maps in anchor order: logits (N, M) and deltas (N, M, 4), or None."""
        logits = None if logit_maps is None else flatten_anchor_maps(logit_maps, 1).squeeze(-1)
        deltas = None if delta_maps is None else flatten_anchor_maps(delta_maps, 4)
        return logits, deltas

    def promoted_mask(self, logits):
        """(N, M) bool: the anchors whose score p = sigmoid(logits) reaches ``promote_thresh``.
        Compared as logits >= logit(threshold), exact where float32's sigmoid rounds to 0 or 1:
        threshold 0 selects every anchor, 1 none."""
        return logits.detach() >= torch.logit(logits.new_tensor(self.promote_thresh))

    def promote(self, anchors, logits, deltas, num_images=None):
        """Promoted anchors (N, M, 4), detached: decode(deltas (N, M, 4), anchors (M, 4)); the
        initial anchors repeated ``num_images`` times when ``deltas`` is None (no adjustment).
        With ``promote_thresh`` above 0 an anchor outside :meth:`promoted_mask` of the APM
        ``logits`` (N, M) keeps its initial box.

        dw, dh are clamped from below like detectron2 clamps them from above, so that a promoted
        anchor never collapses to zero size (it is the reference box of the detection module).
        """
        if deltas is None:
            return anchors.expand(num_images, -1, -1)
        _, _, ww, wh = self.box2box_transform.weights
        min_log_scale = -self.box2box_transform.scale_clamp * deltas.new_tensor([ww, wh])
        deltas = deltas.detach()
        deltas = torch.cat([deltas[..., :2], torch.maximum(deltas[..., 2:], min_log_scale)], -1)
        n, m = deltas.shape[:2]
        boxes = self.box2box_transform.apply_deltas(
            deltas.reshape(n * m, 4), anchors.repeat(n, 1)).view(n, m, 4)
        if self.promote_thresh > 0:
            boxes = torch.where(self.promoted_mask(logits)[..., None], boxes, anchors)
        return boxes

    def label_anchors(self, anchors, gt_instances):
        """Match (``PADetMatcher``) -> labels (N, M) in {1, 0, -1} and matched GT boxes."""
        labels, matched = [], []
        for inst in gt_instances:
            idx, lab = self.matcher(inst.gt_boxes, Boxes(anchors))
            labels.append(lab)
            gt = inst.gt_boxes.tensor
            matched.append(gt[idx] if len(gt) else torch.zeros_like(anchors))
        return torch.stack(labels), torch.stack(matched)

    def losses(self, anchors, logits, deltas, gt_labels, gt_boxes):
        """L_apm (§3.3) for flattened logits (N, M), deltas (N, M, 4) and matched targets: the
        terms of the built branches, ``loss_apm_cls`` = L_b and ``loss_apm_box_reg`` = L_r
        (``logits`` / ``deltas`` is None for a branch that is not built: no term), each times
        ``loss_weight``."""
        pos, neg = gt_labels == 1, gt_labels == 0
        num_pos = pos.sum().item()
        normalizer = max(num_pos, 1)
        storage = get_event_storage()
        storage.put_scalar("padet/apm_num_pos_per_image", num_pos / len(gt_labels))
        storage.put_scalar("padet/apm_num_neg_per_image", neg.sum().item() / len(gt_labels))
        losses = {}
        if logits is not None:
            bce = F.binary_cross_entropy_with_logits(
                logits, pos.to(logits.dtype), reduction="none")
            keep = pos | hard_negative_mask(bce, pos, neg, self.hnm_ratio)
            losses["loss_apm_cls"] = bce[keep].sum() / normalizer
        if deltas is not None:
            target = self.box2box_transform.get_deltas(
                anchors.expand_as(gt_boxes)[pos], gt_boxes[pos])
            losses["loss_apm_box_reg"] = smooth_l1_loss(
                deltas[pos], target, self.smooth_l1_beta, reduction="sum") / normalizer
        return {k: v * self.loss_weight for k, v in losses.items()}

    def forward(self, images, features, gt_instances=None):
        """detectron2's proposal-generator contract: per-image Instances with every promoted
        anchor (``proposal_boxes``, detached, anchor order; the initial anchors without the
        adjustment branch) and ``objectness_logits`` (with the scoring branch); losses in
        training."""
        features = [features[f] for f in self.in_features]
        logits, deltas = self.flatten(*self.predict(features))
        anchors = self.anchors(features, images.tensor.shape[-2:])
        promoted = self.promote(anchors, logits, deltas, len(images))
        proposals = []
        for i, image_size in enumerate(images.image_sizes):
            inst = Instances(image_size)
            inst.proposal_boxes = Boxes(promoted[i])
            if logits is not None:
                inst.objectness_logits = logits[i]
            proposals.append(inst)
        losses = {}
        if self.training:
            gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
            losses = self.losses(anchors, logits, deltas, gt_labels, gt_boxes)
        return proposals, losses


def build_padet_anchor_generator(cfg):
    """The SSD prior generator from ``MODEL.PADET.INPUT_SIZE`` / ``ANCHOR_*``."""
    p = cfg.MODEL.PADET
    return SSDAnchorGenerator(input_size=p.INPUT_SIZE, size_fractions=p.ANCHOR_SIZE_FRACTIONS,
                              aspect_ratios=p.ANCHOR_ASPECT_RATIOS, clip=p.ANCHOR_CLIP)
