"""``IoUUniformCascadeROIHeads``: the Cascade R-CNN variant of IoU-uniform R-CNN (paper §4.2,
Tables 1-3), as the authors' code builds it (``CascadeRCNN_IoU`` in
github.com/zl1994/IoU-Uniform-R-CNN) but without its double-counted stage-3 losses.

Every stage s has a classification tower (``box_head[s]`` + ``box_predictor[s]``), a regression +
IoU tower (``reg_iou_head[s]``) trained on its own generator G_s, and its own box coder. In
training, stage s+1's RoIs are stage s's sampled RoIs (GT-appended boxes removed) refined by
tower s without gradient, then relabelled at the stage IoU and resampled (``resample``, mmdet v1)
or only relabelled (detectron2). The loss is Σ_s lw_s (L_cls,s + L_reg,s + L_iou,s), each term
once. At test the RoIs pass through the three regression towers; EFO predicts the IoU at the
final boxes with tower 3; the class probability comes from the three classification towers.
"""
import functools

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat, cross_entropy
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, CascadeROIHeads
from detectron2.utils.events import get_event_storage

from .inference import iou_uniform_inference
from .reg_iou_head import IoUUniformRegIoUHead
from .roi_heads import (
    IoUUniformHeadMixin, build_classifier, generate_samples, refine_boxes, reg_iou_loss_terms,
    shared_options_from_config,
)
from .sample_generator import IoUUniformSampleGenerator

__all__ = ["IoUUniformCascadeROIHeads", "TEST_SCORES"]

TEST_SCORES = ("logits", "probs")


@ROI_HEADS_REGISTRY.register()
class IoUUniformCascadeROIHeads(IoUUniformHeadMixin, CascadeROIHeads):
    """Cascade IoU-uniform R-CNN ROI heads; see the module docstring."""

    @configurable
    def __init__(
        self,
        *,
        reg_iou_heads,
        sample_generators,
        box2box_transforms,
        stage_loss_weights=(1.0, 0.5, 0.25),
        resample: bool = True,
        test_score: str = "logits",
        **kwargs,
    ):
        """
        Args:
            reg_iou_heads, sample_generators, box2box_transforms: one per stage.
            stage_loss_weights: lw_s, each stage's three losses scaled once by it.
            resample: resample RoIs at every stage (mmdet v1); False: relabel only (detectron2).
            test_score: class probability at test from the mean stage "logits" or mean "probs".
            kwargs: the loss / inference options of :class:`IoUUniformHeadMixin` and
                detectron2's ``CascadeROIHeads`` arguments.
        """
        if test_score not in TEST_SCORES:
            raise ValueError(f"MODEL.IOU_UNIFORM.CASCADE_TEST_SCORE must be one of "
                             f"{TEST_SCORES}, got {test_score!r}")
        super().__init__(**kwargs)
        n = self.num_cascade_stages
        for name, v in [("generators", sample_generators), ("IoU towers", reg_iou_heads),
                        ("box coders", box2box_transforms),
                        ("CASCADE_STAGE_LOSS_WEIGHTS", stage_loss_weights)]:
            if len(v) != n:
                raise ValueError(f"IoU-uniform cascade: {len(v)} {name} for {n} stages")
        self.reg_iou_head = nn.ModuleList(reg_iou_heads)
        self.sample_generators = list(sample_generators)
        self.box2box_transforms = list(box2box_transforms)
        self.stage_loss_weights = tuple(stage_loss_weights)
        self.resample = resample
        self.test_score = test_score

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        c = cfg.MODEL.IOU_UNIFORM
        ret.update(shared_options_from_config(cfg))
        ret["stage_loss_weights"] = tuple(c.CASCADE_STAGE_LOSS_WEIGHTS)
        ret["resample"] = c.CASCADE_RESAMPLE
        ret["test_score"] = c.CASCADE_TEST_SCORE
        tables = [c.CASCADE_INTERVALS, c.CASCADE_CENTER_OFFSETS, c.CASCADE_SCALE_RANGES,
                  c.CASCADE_NUM_PER_INTERVAL, c.CASCADE_ARGMAX_FILTER]
        ret["sample_generators"] = [
            IoUUniformSampleGenerator(
                intervals=intervals, center_offsets=offsets, scale_ranges=scales,
                num_per_interval=num, num_attempts=c.NUM_ATTEMPTS, argmax_filter=argmax,
                max_gts=c.MAX_GTS_PER_IMAGE,
            )
            for intervals, offsets, scales, num, argmax in zip(*tables)
        ]
        if any(len(t) != len(ret["box_heads"]) for t in tables):
            raise ValueError("MODEL.IOU_UNIFORM.CASCADE_* tables need one entry per stage of "
                             "ROI_BOX_CASCADE_HEAD.IOUS")
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        """detectron2's cascade pooler, box heads and matchers; Linear classifiers; one
        regression + IoU tower and box coder per stage (ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS)."""
        ret = super()._init_box_head(cfg, input_shape)
        channels = input_shape[ret["box_in_features"][0]].channels
        res = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        pooled = ShapeSpec(channels=channels, height=res, width=res)
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        ret["box_predictors"] = [build_classifier(h.output_shape, num_classes)
                                 for h in ret["box_heads"]]
        ret["reg_iou_heads"] = [IoUUniformRegIoUHead(cfg, pooled) for _ in ret["box_heads"]]
        ret["box2box_transforms"] = [
            Box2BoxTransform(weights=w) for w in cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS
        ]
        return ret

    # ------------------------------------------------------------------ towers
    def classify(self, features, boxes, stage):
        """Classification tower of ``stage``: logits (R, C+1)."""
        return self.cls_logits(self.box_pooler(features, boxes), stage)

    def regress(self, features, boxes, stage):
        """Regression + IoU tower of ``stage``: deltas (R, 4), IoU u (R,)."""
        return self.apply_reg_iou_head(self.reg_iou_head[stage], self.box_pooler(features, boxes))

    def cls_logits(self, box_features, stage):
        """Classification tower of ``stage`` on pooled features: logits (R, C+1)."""
        return self.box_predictor[stage](torch.flatten(self.box_head[stage](box_features), 1))

    # ------------------------------------------------------------------ training
    def box_losses(self, features, proposals, targets):
        """Σ_s lw_s (L_cls,s + L_reg,s + L_iou,s), keys suffixed ``_stage<s>``."""
        losses = {}
        storage = get_event_storage()
        for stage in range(self.num_cascade_stages):
            with storage.name_scope(f"stage{stage}"):
                if stage > 0:
                    proposals = self.next_stage_proposals(features, proposals, targets, stage)
                stage_losses = self.stage_losses(features, proposals, targets, stage)
            lw = self.stage_loss_weights[stage]
            losses.update({f"{k}_stage{stage}": lw * v for k, v in stage_losses.items()})
        return losses

    def stage_losses(self, features, proposals, targets, stage):
        """Unweighted L_cls (sampled RoIs), L_reg and L_iou (generator G_s) of one stage."""
        logits = self.classify(features, [p.proposal_boxes for p in proposals], stage)
        loss_cls = cross_entropy(logits, cat([p.gt_classes for p in proposals]))
        samples = generate_samples(self.sample_generators[stage], targets)
        get_event_storage().put_scalar(
            "iou_uniform/num_reg_samples", sum(len(s) for s in samples) / len(samples)
        )
        deltas, ious = self.regress(features, [s.proposal_boxes for s in samples], stage)
        loss_reg, loss_iou = reg_iou_loss_terms(
            deltas, ious, samples, self.box2box_transforms[stage], self.reg_interval_boundaries,
            self.reg_interval_weights, self.reg_beta, self.iou_beta, self.iou_loss_weight,
        )
        return {"loss_cls": loss_cls, "loss_box_reg": loss_reg, "loss_iou": loss_iou}

    @torch.no_grad()
    def next_stage_proposals(self, features, proposals, targets, stage):
        """Stage ``stage``'s RoIs: the previous stage's sampled RoIs refined by its regression
        tower (no gradient), then resampled (GT-appended boxes removed first) or relabelled."""
        if self.resample:
            # GT-appended RoIs are the ones equal to their own matched GT box (no GT: none)
            proposals = [p[~(p.proposal_boxes.tensor == p.gt_boxes.tensor).all(dim=1)]
                         if p.has("gt_boxes") else p for p in proposals]
        boxes = [p.proposal_boxes for p in proposals]
        deltas, _ = self.regress(features, boxes, stage - 1)
        image_sizes = [p.image_size for p in proposals]
        refined = refine_boxes(self.box2box_transforms[stage - 1], boxes, deltas, image_sizes)
        new = self._create_proposals_from_boxes([b.tensor for b in refined], image_sizes)
        if not self.resample:
            return self._match_and_label_boxes(new, stage, targets)
        for p in new:
            p.objectness_logits = torch.zeros(len(p), device=p.proposal_boxes.device)
        matcher, self.proposal_matcher = self.proposal_matcher, self.proposal_matchers[stage]
        try:  # detectron2's labelling and sampling with this stage's IoU threshold
            return self.label_and_sample_proposals(new, targets)
        finally:
            self.proposal_matcher = matcher

    # ------------------------------------------------------------------ inference
    def predict(self, features, proposals):
        """Refine through every stage; p from all classifiers; EFO with the last tower on the
        detection candidates."""
        boxes = [p.proposal_boxes for p in proposals]
        image_sizes = [p.image_size for p in proposals]
        logits = []
        for stage in range(self.num_cascade_stages):
            box_features = self.box_pooler(features, boxes)  # one pooling for both towers
            logits.append(self.cls_logits(box_features, stage))
            deltas, ious = self.apply_reg_iou_head(self.reg_iou_head[stage], box_features)
            boxes = refine_boxes(self.box2box_transforms[stage], boxes, deltas, image_sizes)
        if self.test_score == "logits":
            probs = F.softmax(sum(logits) / len(logits), dim=-1)
        else:
            probs = sum(F.softmax(x, dim=-1) for x in logits) / len(logits)
        keep, boxes = self.detection_candidates(probs, boxes)
        ious = ious[keep]
        if self.efo:
            last_tower = functools.partial(self.apply_reg_iou_head, self.reg_iou_head[-1])
            ious = self.efo_ious(features, boxes, last_tower)
        num = [len(b) for b in boxes]
        return iou_uniform_inference(
            [b.tensor for b in boxes], probs[keep].split(num), ious.split(num), image_sizes,
            self.score_mode, self.test_score_thresh, self.test_nms_thresh,
            self.test_topk_per_image,
        )
