"""The PADet single-shot detector (paper §3): encoder-decoder backbone, APM, FAM head."""
import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_proposal_generator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage

from projects.iou_balanced import IoUBalancedLoss, iou_balanced_options

from .anchors import flatten_anchor_maps
from .config import check_padet_input_size, check_padet_options
from .detection_head import PADetDetectionHead
from .hard_negative_mining import hard_negative_mask
from .matching import PADetMatcher
from .soft_nms import batched_soft_nms

__all__ = ["PADet"]


@META_ARCH_REGISTRY.register()
class PADet(nn.Module):
    """PADet: the APM scores and promotes every anchor; the detection module matches GT boxes to
    the *promoted* anchors, ignores negatives with APM score p < theta, and classifies (softmax,
    C + 1) and regresses relative to them, on FAM-aligned features.

    Training returns {loss_apm_cls, loss_apm_box_reg, loss_det_cls, loss_det_box_reg} (§3.3);
    inference drops anchors with p < theta, keeps class scores > 0.01, runs per-class soft-NMS
    and keeps the top 300 per image (§3.3 "Inference").

    Table 2's components can be switched off in the APM (``MODEL.PADET.APM_CLS`` /
    ``APM_REG``, the APM's ``scoring`` / ``adjustment`` branch): without scoring (APM_C) there
    is no theta rule and no L_b, without adjustment (APM_R) the detection module works on the
    initial anchors and there is no APM L_r; with both off only the anchors of the APM remain.
    A branch that is off is not built, so every parameter trains in every row.
    """

    @configurable
    def __init__(self, *, backbone, apm, head, num_classes, pixel_mean, pixel_std,
                 box2box_transform, matcher, theta=0.01, det_hnm_ratio=3, smooth_l1_beta=1.0,
                 score_thresh_test=0.01, soft_nms_method="linear", soft_nms_iou_thresh=0.3,
                 soft_nms_sigma=0.5, soft_nms_min_score=0.001, pre_nms_topk_per_class=0,
                 detections_per_image=300, iou_balanced=None):
        super().__init__()
        if not apm.adjustment and head.uses_apm_deltas:
            raise ValueError(
                "MODEL.PADET.APM_REG is False (no anchor-adjustment branch), but the FAM offsets "
                "of MODEL.PADET.FAM_MODE come from the APM's deltas: use 'none' or 'implicit'")
        self.backbone, self.apm, self.head = backbone, apm, head
        self.num_classes = num_classes
        self.box2box_transform, self.matcher = box2box_transform, matcher
        self.theta, self.det_hnm_ratio, self.smooth_l1_beta = theta, det_hnm_ratio, smooth_l1_beta
        self.score_thresh_test = score_thresh_test
        self.soft_nms_kwargs = dict(method=soft_nms_method, iou_threshold=soft_nms_iou_thresh,
                                    sigma=soft_nms_sigma, score_threshold=soft_nms_min_score)
        self.pre_nms_topk_per_class = pre_nms_topk_per_class
        self.detections_per_image = detections_per_image
        # iou_balanced: IoUBalancedLoss's kwargs (MODEL.IOU_BALANCED), None for the plain losses
        self.iou_balanced = IoUBalancedLoss(
            **(iou_balanced or {"cls_enabled": False, "loc_enabled": False}))
        if self.iou_balanced.loc_enabled:  # checkpointed as "iou_balanced_w_loc.*"
            self.iou_balanced_w_loc = self.iou_balanced.loc_weight
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        check_padet_input_size(cfg)
        check_padet_options(cfg)
        p = cfg.MODEL.PADET
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        return {
            "backbone": backbone,
            "apm": build_proposal_generator(cfg, shapes),
            "head": PADetDetectionHead(cfg, shapes),
            "num_classes": p.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "box2box_transform": Box2BoxTransform(weights=p.BBOX_REG_WEIGHTS),
            "matcher": PADetMatcher(p.IOU_THRESHOLDS),
            "theta": p.THETA,
            "det_hnm_ratio": p.DET_HNM_RATIO,
            "smooth_l1_beta": p.SMOOTH_L1_BETA,
            "score_thresh_test": p.SCORE_THRESH_TEST,
            "soft_nms_method": p.SOFT_NMS_METHOD,
            "soft_nms_iou_thresh": p.SOFT_NMS_IOU_THRESH,
            "soft_nms_sigma": p.SOFT_NMS_SIGMA,
            "soft_nms_min_score": p.SOFT_NMS_MIN_SCORE,
            "pre_nms_topk_per_class": p.PRE_NMS_TOPK_PER_CLASS,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "iou_balanced": iou_balanced_options(cfg) if p.IOU_BALANCED else None,
        }

    @property
    def apm_cls(self):
        """Table 2 "APM_C": the APM scores anchors (theta rule, L_b)."""
        return self.apm.scoring

    @property
    def apm_reg(self):
        """Table 2 "APM_R": the APM promotes anchors (L_r of the APM)."""
        return self.apm.adjustment

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs):
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std
                  for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def forward(self, batched_inputs):
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        features = [features[f] for f in self.apm.in_features]
        apm_logit_maps, apm_delta_maps = self.apm.predict(features)
        cls_maps, reg_maps = self.head(features, apm_delta_maps)

        anchors = self.apm.anchors(features, images.tensor.shape[-2:])
        apm_logits, apm_deltas = self.apm.flatten(apm_logit_maps, apm_delta_maps)
        # detached (RefineDet); anchors below APM_PROMOTE_THRESH keep their initial box
        promoted = self.apm.promote(anchors, apm_logits, apm_deltas, len(images))
        cls_logits = flatten_anchor_maps(cls_maps, self.num_classes + 1)
        reg_deltas = flatten_anchor_maps(reg_maps, 4)

        if self.training:
            if "instances" not in batched_inputs[0]:
                raise ValueError("PADet training needs 'instances' (GT boxes) in every input")
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            losses = {}
            if self.apm_cls or self.apm_reg:  # the losses of the built branches
                apm_labels, apm_gt_boxes = self.apm.label_anchors(anchors, gt_instances)
                losses = self.apm.losses(anchors, apm_logits, apm_deltas, apm_labels, apm_gt_boxes)
            losses.update(self.losses(promoted, apm_logits, cls_logits, reg_deltas, gt_instances))
            return losses

        results = self.inference(promoted, apm_logits, cls_logits, reg_deltas, images.image_sizes)
        processed = []
        for result, inp, image_size in zip(results, batched_inputs, images.image_sizes):
            height, width = inp.get("height", image_size[0]), inp.get("width", image_size[1])
            processed.append({"instances": detector_postprocess(result, height, width)})
        return processed

    def label_promoted(self, promoted, apm_logits, gt_instances):
        """Match GT to the promoted anchors (§3 "Anchor Design and Matching") and apply the
        theta rule (§3.1).

        Returns class targets (N, M) (C = background), positives, the negatives that may train
        (negative and p >= theta) and matched GT boxes (N, M, 4). Positives are never dropped.
        """
        targets, matched = [], []
        labels = []
        for boxes, inst in zip(promoted, gt_instances):
            idx, lab = self.matcher(inst.gt_boxes, Boxes(boxes))
            labels.append(lab)
            if len(inst):
                targets.append(torch.where(lab == 1, inst.gt_classes[idx], self.num_classes))
                matched.append(inst.gt_boxes.tensor[idx])
            else:
                targets.append(torch.full_like(lab, self.num_classes, dtype=torch.long))
                matched.append(torch.zeros_like(boxes))
        labels = torch.stack(labels)
        negatives = labels == 0
        if self.apm_cls:
            negatives &= apm_logits.detach().sigmoid() >= self.theta
        return torch.stack(targets), labels == 1, negatives, torch.stack(matched)

    def losses(self, promoted, apm_logits, cls_logits, reg_deltas, gt_instances):
        """L_det = [sum CE + sum_pos smoothL1(t - encode(GT, promoted))] / N_d (§3.3), CE over
        the positives and the hard negatives (DET_HNM_RATIO : 1 per image) among the negatives
        that survive the theta rule. With ``MODEL.PADET.IOU_BALANCED`` the IoU-balanced losses
        (:class:`IoUBalancedLoss`, Eq. 3-6) replace CE (before mining) and smooth-L1."""
        targets, pos, negatives, gt_boxes = self.label_promoted(promoted, apm_logits, gt_instances)
        target_deltas = self.box2box_transform.get_deltas(promoted[pos], gt_boxes[pos])
        ib = self.iou_balanced
        # regressed IoU: two-step decode against the promoted anchor
        iou = ib.regressed_iou(
            self.box2box_transform, reg_deltas[pos], promoted[pos], gt_boxes[pos])
        # per-sample CE; IoU-balanced positives are re-weighted before mining (Eq. 3-4)
        ce = ib.cross_entropy(cls_logits.flatten(0, 1), targets.flatten(), pos.flatten(), iou,
                              reduction="none")
        ce = ce.view_as(targets).to(cls_logits.dtype)
        keep = pos | hard_negative_mask(ce, pos, negatives, self.det_hnm_ratio)
        num_pos = pos.sum().item()
        normalizer = max(num_pos, 1)
        loss_box = ib.localization(reg_deltas[pos], target_deltas, iou, beta=self.smooth_l1_beta)
        storage = get_event_storage()
        storage.put_scalar("padet/det_num_pos_per_image", num_pos / len(targets))
        storage.put_scalar("padet/det_num_neg_per_image", negatives.sum().item() / len(targets))
        return {"loss_det_cls": ce[keep].sum() / normalizer,
                "loss_det_box_reg": loss_box / normalizer}

    @torch.no_grad()
    def inference(self, promoted, apm_logits, cls_logits, reg_deltas, image_sizes):
        """Per image: drop anchors with p < theta, decode against the promoted anchors, clip,
        keep class scores > SCORE_THRESH_TEST, per-class soft-NMS, top TEST.DETECTIONS_PER_IMAGE."""
        probs = cls_logits.float().softmax(dim=-1)[..., : self.num_classes]  # float32 (AMP)
        results = []
        for i, image_size in enumerate(image_sizes):
            k = (apm_logits[i].sigmoid() >= self.theta if self.apm_cls
                 else torch.ones(promoted.shape[1], dtype=torch.bool, device=promoted.device))
            boxes = self.box2box_transform.apply_deltas(reg_deltas[i][k], promoted[i][k])
            boxes = Boxes(boxes)
            boxes.clip(image_size)
            scores = probs[i][k]
            anchor_idx, classes = (scores > self.score_thresh_test).nonzero(as_tuple=True)
            scores = scores[anchor_idx, classes]
            if self.pre_nms_topk_per_class > 0:
                anchor_idx, classes, scores = self._topk_per_class(anchor_idx, classes, scores)
            boxes = boxes.tensor[anchor_idx]
            keep, kept_scores = batched_soft_nms(
                boxes, scores, classes, topk=self.detections_per_image, **self.soft_nms_kwargs)
            top = self.detections_per_image
            keep, kept_scores = keep[:top], kept_scores[:top]
            result = Instances(image_size)
            result.pred_boxes = Boxes(boxes[keep])
            result.scores = kept_scores
            result.pred_classes = classes[keep]
            results.append(result)
        return results

    def _topk_per_class(self, anchor_idx, classes, scores):
        """The PRE_NMS_TOPK_PER_CLASS highest scores of each class (a speed option)."""
        order = torch.argsort(scores, descending=True)
        order = order[torch.argsort(classes[order], stable=True)]  # by class, then by score
        counts = torch.bincount(classes, minlength=self.num_classes)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(order), device=order.device) - starts[classes[order]]
        order = order[rank < self.pre_nms_topk_per_class]
        return anchor_idx[order], classes[order], scores[order]
