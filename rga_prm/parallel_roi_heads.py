"""Parallel R-CNN Modules (PRM, paper Sec. 3.2, Fig. 4) for Faster and Cascade R-CNN.

K R-CNN modules (each its own fc tower ``FastRCNNConvFCHead`` and predictor
``FastRCNNOutputLayers``) share the backbone, RPN and RoI pooler. In training every module
samples its own RoI batch from the same labelled proposals at its own positive fraction and
the module losses are summed. At test time the modules' pre-softmax logits are averaged and
the boxes come from the module with the highest positive fraction ("average ensemble").
"""
import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling.proposal_generator.proposal_utils import add_ground_truth_to_proposals
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    CascadeROIHeads,
    StandardROIHeads,
)
from detectron2.modeling.roi_heads.cascade_rcnn import _ScaleGradient
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.utils.events import get_event_storage

from .sampling import label_proposals, sample_proposals

__all__ = ["ParallelROIHeads", "ParallelCascadeROIHeads", "PRMHeadsMixin", "PRMOptions"]


class PRMOptions:
    """The PRM options shared by both heads (``MODEL.PRM``), validated."""

    def __init__(self, positive_fractions, batch_size_per_image, loss_weights, test_module):
        fractions = [float(f) for f in positive_fractions]
        if not fractions or not all(0.0 < f <= 1.0 for f in fractions):
            raise ValueError(
                f"MODEL.PRM.POSITIVE_FRACTIONS must be a non-empty list in (0, 1], got "
                f"{list(positive_fractions)}"
            )
        if len(loss_weights) != len(fractions):
            raise ValueError(
                f"MODEL.PRM.LOSS_WEIGHTS needs one weight per module ({len(fractions)}), got "
                f"{list(loss_weights)}"
            )
        if not -1 <= test_module < len(fractions):
            raise ValueError(
                f"MODEL.PRM.TEST_MODULE must be -1 (ensemble) or a module index < "
                f"{len(fractions)}, got {test_module}"
            )
        if batch_size_per_image <= 0:
            raise ValueError(
                f"MODEL.PRM.BATCH_SIZE_PER_IMAGE must be > 0, got {batch_size_per_image}")
        self.positive_fractions = fractions
        self.batch_size_per_image = int(batch_size_per_image)
        self.loss_weights = [float(w) for w in loss_weights]
        self.test_module = int(test_module)
        # boxes come from the module trained with the most positives (first one on a tie)
        self.primary_module = max(range(len(fractions)), key=lambda k: fractions[k])

    @property
    def num_modules(self):
        return len(self.positive_fractions)

    @classmethod
    def from_config(cls, cfg):
        prm = cfg.MODEL.PRM
        return cls(prm.POSITIVE_FRACTIONS, prm.BATCH_SIZE_PER_IMAGE, prm.LOSS_WEIGHTS,
                   prm.TEST_MODULE)

    def sample(self, labelled_proposals, num_classes, log_prefix=""):
        """Every module's own soft sample of the same labelled proposals (Sec. 3.2)."""
        return [
            sample_proposals(labelled_proposals, self.batch_size_per_image, fraction,
                             num_classes, f"{log_prefix}roi_head/num_{{}}_samples_m{k}")
            for k, fraction in enumerate(self.positive_fractions)
        ]

    def module_losses(self, k, predictor, predictions, proposals, scope, suffix):
        """Module k's weighted ``FastRCNNOutputLayers`` losses, keys suffixed; logs its
        classification accuracy on positive and on background RoIs under ``scope``."""
        storage = get_event_storage()
        with storage.name_scope(scope):
            losses = predictor.losses(predictions, proposals)
            log_background_accuracy(predictions[0], proposals)
        return {name + suffix: value * self.loss_weights[k] for name, value in losses.items()}

    def test_predictions(self, box_features, box_heads, box_predictors):
        """(predictor, (logits, deltas)) used at test time: the average ensemble (mean
        pre-softmax logits, deltas and predictor of the primary module) or one module alone."""
        if self.test_module >= 0:
            k = self.test_module
            return box_predictors[k], box_predictors[k](box_heads[k](box_features))
        outputs = [predictor(head(box_features))
                   for head, predictor in zip(box_heads, box_predictors)]
        logits = torch.stack([scores for scores, _ in outputs]).mean(dim=0)
        k = self.primary_module
        return box_predictors[k], (logits, outputs[k][1])


def log_background_accuracy(logits, proposals):
    """``fast_rcnn/bg_cls_accuracy``: the fraction of background RoIs classified background
    (paper Fig. 3 Middle; detectron2 itself logs the positive accuracy, fg_cls_accuracy)."""
    if not proposals:
        return
    gt_classes = torch.cat([p.gt_classes for p in proposals])
    background = gt_classes == logits.shape[1] - 1
    if background.any():
        correct = logits[background].argmax(dim=1) == logits.shape[1] - 1
        get_event_storage().put_scalar("fast_rcnn/bg_cls_accuracy", correct.float().mean().item())


class PRMHeadsMixin:
    """What the PRM ROI heads share: the validated :class:`PRMOptions` (``MODEL.PRM``) as the
    ``prm`` constructor argument, K independently initialised box-head builds, and
    :meth:`forward`. The class using it defines ``_box_losses`` and an inference
    ``_forward_box``."""

    prm_module_name = "box heads and predictors"  # what each module has, for the error

    @configurable
    def __init__(self, *, prm: PRMOptions, **kwargs):
        super().__init__(**kwargs)
        for heads, predictors in self.prm_module_groups():
            if len(heads) != prm.num_modules or len(predictors) != prm.num_modules:
                raise ValueError(f"PRM needs {prm.num_modules} {self.prm_module_name}")
        self.prm = prm

    def prm_module_groups(self):
        """The (box heads, box predictors) lists that must hold one entry per module."""
        return [(self.box_head, self.box_predictor)]

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["prm"] = PRMOptions.from_config(cfg)
        return ret

    @classmethod
    def _init_module_box_heads(cls, cfg, input_shape, per_module_keys, combine):
        """The parent's ``_init_box_head`` built once per module (independently initialised):
        each of ``per_module_keys`` becomes ``combine([module k's entry])``, the other entries
        (pooler, ...) are the first build's."""
        parts = []
        for _ in cfg.MODEL.PRM.POSITIVE_FRACTIONS:
            parts.append(super()._init_box_head(cfg, input_shape))
        ret = dict(parts[0])
        ret.update({key: combine([part[key] for part in parts]) for key in per_module_keys})
        return ret

    def forward(self, images, features, proposals, targets=None):
        """See :meth:`ROIHeads.forward`. Training: ``_box_losses`` of the GT-appended proposals
        (every module's losses, the primary module's sample); mask / keypoint branches train on
        the primary module's sampled RoIs, which are returned."""
        del images
        if not self.training:
            pred_instances = self._forward_box(features, proposals)
            return self.forward_with_given_boxes(features, pred_instances), {}
        assert targets, "'targets' argument is required during training"
        if self.proposal_append_gt:
            proposals = add_ground_truth_to_proposals(targets, proposals)
        losses, primary = self._box_losses(features, proposals, targets)
        losses.update(self._forward_mask(features, primary))
        losses.update(self._forward_keypoint(features, primary))
        return primary, losses


def _per_stage(module_stage_lists):
    """[module k][stage s] -> [stage s] ModuleList over modules k."""
    return [nn.ModuleList(modules) for modules in zip(*module_stage_lists)]


@ROI_HEADS_REGISTRY.register()
class ParallelROIHeads(PRMHeadsMixin, StandardROIHeads):
    """Faster R-CNN ROI heads with K parallel R-CNN modules (Sec. 3.2).

    ``box_head`` and ``box_predictor`` are ModuleLists over the modules. Mask / keypoint
    branches, if any, train on the primary module's sampled RoIs.
    """

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.train_on_pred_boxes:
            raise ValueError("ParallelROIHeads does not support ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES")

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        return cls._init_module_box_heads(
            cfg, input_shape, ("box_head", "box_predictor"), nn.ModuleList)

    def _box_losses(self, features, proposals, targets):
        """Label once, every module samples at its own positive fraction; the sum over modules
        of each module's losses on its own sampled RoIs (Sec. 3.2), and the primary module's
        sample (for mask / keypoint branches)."""
        labelled = label_proposals(proposals, targets, self.proposal_matcher, self.num_classes)
        module_proposals = self.prm.sample(labelled, self.num_classes)
        features = [features[f] for f in self.box_in_features]
        losses = {}
        for k, sampled in enumerate(module_proposals):
            box_features = self.box_pooler(features, [x.proposal_boxes for x in sampled])
            predictions = self.box_predictor[k](self.box_head[k](box_features))
            losses.update(self.prm.module_losses(
                k, self.box_predictor[k], predictions, sampled, f"m{k}", f"_m{k}"))
        return losses, module_proposals[self.prm.primary_module]

    def _forward_box(self, features, proposals):
        """Inference: pool once at the proposals, ensemble the modules (or one module)."""
        features = [features[f] for f in self.box_in_features]
        box_features = self.box_pooler(features, [x.proposal_boxes for x in proposals])
        predictor, predictions = self.prm.test_predictions(
            box_features, self.box_head, self.box_predictor)
        pred_instances, _ = predictor.inference(predictions, proposals)
        return pred_instances


@ROI_HEADS_REGISTRY.register()
class ParallelCascadeROIHeads(PRMHeadsMixin, CascadeROIHeads):
    """Cascade R-CNN with K parallel R-CNN modules at every stage: each stage labels its
    proposals once with its IoU threshold, every module samples from them; the next stage
    refines the primary module's sampled RoIs. ``box_head[s][k]`` and ``box_predictor[s][k]``
    are stage s, module k. The paper gives only Cascade + PRM numbers (Tables 2-3), no design,
    and no code was released: this is the project's choice, kept close to detectron2's
    ``CascadeROIHeads`` flow (see docs/rga_prm.md).
    """

    prm_module_name = "box heads and predictors per stage"

    def prm_module_groups(self):
        return list(zip(self.box_head, self.box_predictor))

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        return cls._init_module_box_heads(
            cfg, input_shape, ("box_heads", "box_predictors"), _per_stage)

    def _pool(self, features, proposals):
        box_features = self.box_pooler(features, [x.proposal_boxes for x in proposals])
        # detectron2's cascade convention: 1/num_stages on the gradient into the features
        return _ScaleGradient.apply(box_features, 1.0 / self.num_cascade_stages)

    def _box_losses(self, features, proposals, targets):
        """Per stage: label once, every module samples and computes its losses; the primary
        module's refined boxes (detached) are the next stage's proposals. Returns the losses
        and the primary module's stage-0 sample (for mask / keypoint branches)."""
        features = [features[f] for f in self.box_in_features]
        image_sizes = [x.image_size for x in proposals]
        losses, first_sample, next_boxes = {}, None, None
        for s in range(self.num_cascade_stages):
            if s > 0:
                proposals = self._create_proposals_from_boxes(next_boxes, image_sizes)
            labelled = label_proposals(
                proposals, targets, self.proposal_matchers[s], self.num_classes)
            for k, sampled in enumerate(self.prm.sample(labelled, self.num_classes, f"stage{s}/")):
                predictor = self.box_predictor[s][k]
                predictions = predictor(self.box_head[s][k](self._pool(features, sampled)))
                losses.update(self.prm.module_losses(
                    k, predictor, predictions, sampled, f"stage{s}/m{k}", f"_stage{s}_m{k}"))
                if k == self.prm.primary_module:
                    next_boxes = predictor.predict_boxes(predictions, sampled)
                    if s == 0:
                        first_sample = sampled
        return losses, first_sample

    def _forward_box(self, features, proposals, targets=None):
        """Inference as detectron2's cascade, each stage's prediction being the PRM ensemble
        (or ``TEST_MODULE`` alone): mean of the stages' probabilities, last stage's boxes."""
        assert not self.training
        features = [features[f] for f in self.box_in_features]
        image_sizes = [x.image_size for x in proposals]
        head_outputs, boxes = [], None  # (predictor, predictions, proposals) per stage
        for s in range(self.num_cascade_stages):
            if s > 0:
                proposals = self._create_proposals_from_boxes(boxes, image_sizes)
            box_features = self.box_pooler(features, [x.proposal_boxes for x in proposals])
            predictor, predictions = self.prm.test_predictions(
                box_features, self.box_head[s], self.box_predictor[s])
            boxes = predictor.predict_boxes(predictions, proposals)
            head_outputs.append((predictor, predictions, proposals))
        probs_per_stage = [p.predict_probs(pred, props) for p, pred, props in head_outputs]
        scores = [sum(per_image) / self.num_cascade_stages for per_image in zip(*probs_per_stage)]
        predictor = head_outputs[-1][0]
        pred_instances, _ = fast_rcnn_inference(
            boxes, scores, image_sizes, predictor.test_score_thresh,
            predictor.test_nms_thresh, predictor.test_topk_per_image,
        )
        return pred_instances
