"""``IoUUniformROIHeads``: Faster R-CNN second stage of IoU-uniform R-CNN (paper §3, Fig. 4-5).

Two towers share the (parameter-free) ROI pooler:
- the classification tower (``box_head`` + ``box_predictor``, a Linear to C+1 logits) trains on
  the RPN proposals sampled as usual (``label_and_sample_proposals``);
- the regression + IoU tower (``reg_iou_head``: class-agnostic deltas and one IoU output) trains
  on IoU-uniform samples generated around the GT boxes (Eq. 1), with IoU-interval regression
  weights (Eq. 2) and an IoU loss.
At test, "eliminating feature offsets" (EFO, §3.2) pools again at the refined boxes to predict
their IoU; the score is p_c × u, then NMS.
"""
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat, cross_entropy
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage

from .inference import SCORE_MODES, iou_uniform_inference
from .losses import interval_weighted_reg_loss, iou_prediction_loss
from .reg_iou_head import IoUUniformRegIoUHead
from .sample_generator import IoUUniformSampleGenerator, paired_iou

__all__ = [
    "IoUUniformHeadMixin", "IoUUniformROIHeads", "build_classifier", "generate_samples",
    "reg_iou_loss_terms", "shared_options_from_config",
]


def build_classifier(input_shape: ShapeSpec, num_classes):
    """Linear(features, C + 1) classification output, N(0, 0.01) init as detectron2's."""
    dim = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
    layer = nn.Linear(dim, num_classes + 1)
    nn.init.normal_(layer.weight, std=0.01)
    nn.init.constant_(layer.bias, 0)
    return layer


def shared_options_from_config(cfg):
    """Constructor options shared by the Faster R-CNN and Cascade ROI heads."""
    c = cfg.MODEL.IOU_UNIFORM
    return {
        "reg_interval_boundaries": tuple(c.INTERVALS),
        "reg_interval_weights": tuple(c.REG_INTERVAL_WEIGHTS),
        "reg_beta": c.REG_BETA,
        "iou_beta": c.IOU_BETA,
        "iou_loss_weight": c.IOU_LOSS_WEIGHT,
        "iou_sigmoid": c.IOU_SIGMOID,
        "efo": c.EFO,
        "score_mode": c.SCORE_MODE,
        "test_score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        "test_nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
        "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
    }


def check_shared_options(score_mode, reg_interval_boundaries, reg_interval_weights):
    if score_mode not in SCORE_MODES:
        raise ValueError(f"MODEL.IOU_UNIFORM.SCORE_MODE must be one of {SCORE_MODES}, "
                         f"got {score_mode!r}")
    if len(reg_interval_weights) != len(reg_interval_boundaries) - 1:
        raise ValueError(
            f"MODEL.IOU_UNIFORM.REG_INTERVAL_WEIGHTS has {len(reg_interval_weights)} "
            f"entries for {len(reg_interval_boundaries) - 1} intervals of INTERVALS"
        )


def generate_samples(generator, targets):
    """Generated IoU-uniform samples (Eq. 1) of every image as ``Instances`` with
    ``proposal_boxes``, ``gt_boxes`` (regression targets) and ``gt_ious`` (IoU targets t)."""
    samples = []
    for t in targets:
        s = generator(t.gt_boxes, t.image_size)
        samples.append(Instances(t.image_size, proposal_boxes=Boxes(s.boxes),
                                 gt_boxes=t.gt_boxes[s.gt_inds], gt_ious=s.ious))
    return samples


def reg_iou_loss_terms(deltas, ious, samples, box2box_transform, boundaries, weights,
                       reg_beta, iou_beta, iou_loss_weight):
    """(L_reg, L_iou) of a regression + IoU tower's outputs at ``samples`` (Eq. 2, §3.2)."""
    gt_deltas = box2box_transform.get_deltas(
        cat([s.proposal_boxes.tensor for s in samples]), cat([s.gt_boxes.tensor for s in samples])
    )
    target_ious = cat([s.gt_ious for s in samples])
    loss_reg = interval_weighted_reg_loss(deltas, gt_deltas, target_ious, boundaries, weights,
                                          reg_beta)
    loss_iou = iou_prediction_loss(ious, target_ious, iou_beta) * iou_loss_weight
    return loss_reg, loss_iou


def refine_boxes(box2box_transform, proposal_boxes, deltas, image_sizes):
    """Decode class-agnostic deltas at the RoIs and clip to each image: list[Boxes]."""
    num = [len(b) for b in proposal_boxes]
    pred = box2box_transform.apply_deltas(deltas, cat([b.tensor for b in proposal_boxes]))
    refined = [Boxes(p) for p in pred.split(num)]
    for b, size in zip(refined, image_sizes):
        b.clip(size)
    return refined


class IoUUniformHeadMixin:
    """What the IoU-uniform ROI heads (Faster, Cascade, PRM) share: the loss / inference options,
    ``forward`` / ``_forward_box`` and the application of a regression + IoU tower.

    Training: detectron2's labelling and sampling → :meth:`box_losses`; mask / keypoint
    branches train on the sampled RoIs. Inference: :meth:`predict` at the proposals. The class
    using it defines ``box_losses`` and ``predict``.
    """

    def __init__(
        self,
        *,
        reg_interval_boundaries=(0.5, 0.6, 0.7, 0.8, 1.0),
        reg_interval_weights=(1.0, 1.5, 3.0, 3.0),
        reg_beta: float = 1.0,
        iou_beta: float = 0.5,
        iou_loss_weight: float = 1.0,
        iou_sigmoid: bool = False,
        efo: bool = True,
        score_mode: str = "cls_x_iou",
        test_score_thresh: float = 0.05,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
        **kwargs,
    ):
        """
        Args:
            reg_interval_boundaries, reg_interval_weights: w(t) of Eq. 2 (bins (b_j, b_j+1]).
            reg_beta, iou_beta: smooth-L1 betas of L_reg and L_iou; iou_loss_weight: of L_iou.
            iou_sigmoid: sigmoid on the IoU output in the loss and at test.
            efo: eliminate feature offsets at test (§3.2); False: use the IoU at the proposal.
            score_mode: "cls_x_iou" (p_c × u) or "cls" (p_c).
            test_score_thresh, test_nms_thresh, test_topk_per_image: as detectron2's.
            kwargs: the detectron2 ROI heads' arguments.
        """
        check_shared_options(score_mode, reg_interval_boundaries, reg_interval_weights)
        super().__init__(**kwargs)
        self.reg_interval_boundaries = tuple(reg_interval_boundaries)
        self.reg_interval_weights = tuple(reg_interval_weights)
        self.reg_beta = reg_beta
        self.iou_beta = iou_beta
        self.iou_loss_weight = iou_loss_weight
        self.iou_sigmoid = iou_sigmoid
        self.efo = efo
        self.score_mode = score_mode
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image

    def forward(self, images, features, proposals, targets=None):
        """See :meth:`ROIHeads.forward`; the GT ``targets`` also feed the sample generator."""
        del images
        if not self.training:
            pred_instances = self._forward_box(features, proposals)
            return self.forward_with_given_boxes(features, pred_instances), {}
        assert targets, "'targets' argument is required during training"
        proposals = self.label_and_sample_proposals(proposals, targets)
        losses = self._forward_box(features, proposals, targets)
        losses.update(self._forward_mask(features, proposals))
        losses.update(self._forward_keypoint(features, proposals))
        return proposals, losses

    def _forward_box(self, features, proposals, targets=None):
        """Training: :meth:`box_losses`; inference: :meth:`predict`, list[Instances]."""
        features = [features[f] for f in self.box_in_features]
        if not self.training:
            return self.predict(features, proposals)
        return self.box_losses(features, proposals, targets)

    def apply_reg_iou_head(self, reg_iou_head, box_features):
        """A regression + IoU tower on pooled features: deltas (R, 4), IoU u (R,) (sigmoid
        applied if configured)."""
        deltas, ious = reg_iou_head(box_features)
        return deltas, (ious.sigmoid() if self.iou_sigmoid else ious)

    def detection_candidates(self, probs, boxes):
        """The RoIs with some foreground p_c above the score threshold: only they can become
        detections (§3.2 scoring), so the towers after the classifier run on them alone.
        ``probs`` (R, C+1) of the RoIs ``boxes`` (list[Boxes]) → mask (R,), list[Boxes]."""
        keep = (probs[:, :-1] > self.test_score_thresh).any(dim=1)
        return keep, [b[k] for b, k in zip(boxes, keep.split([len(b) for b in boxes]))]

    def efo_ious(self, features, refined, reg_iou_tower):
        """EFO (§3.2): the IoU u2 predicted by ``reg_iou_tower`` (pooled features → deltas, u)
        from features pooled again at the refined boxes (its deltas are not used)."""
        return reg_iou_tower(self.box_pooler(features, refined))[1]


@ROI_HEADS_REGISTRY.register()
class IoUUniformROIHeads(IoUUniformHeadMixin, StandardROIHeads):
    """IoU-uniform R-CNN ROI heads; see the module docstring.

    Submodules: ``box_pooler``, ``box_head`` + ``box_predictor`` (classification tower),
    ``reg_iou_head`` (regression + IoU tower). Training samples of the regression tower come from
    :meth:`reg_iou_samples` (overridable), its features from :meth:`regress`.
    """

    @configurable
    def __init__(
        self,
        *,
        reg_iou_head: nn.Module,
        sample_generator: IoUUniformSampleGenerator,
        box2box_transform: Box2BoxTransform,
        generated_samples: bool = True,
        **kwargs,
    ):
        """
        Args:
            reg_iou_head: the regression + IoU tower (deltas (R, 4), IoU (R,)).
            sample_generator: IoU-uniform sample generator (Eq. 1).
            box2box_transform: box coder of the class-agnostic deltas.
            generated_samples: train the regression + IoU tower on generated samples; False:
                on the positive sampled RPN RoIs (Table 6).
            kwargs: the loss / inference options of :class:`IoUUniformHeadMixin` and
                detectron2's ``StandardROIHeads`` arguments.
        """
        super().__init__(**kwargs)
        if self.train_on_pred_boxes:
            raise ValueError("IoUUniformROIHeads does not support ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES")
        self.reg_iou_head = reg_iou_head
        self.sample_generator = sample_generator
        self.box2box_transform = box2box_transform
        self.generated_samples = generated_samples

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(shared_options_from_config(cfg))
        ret["sample_generator"] = IoUUniformSampleGenerator(cfg)
        ret["generated_samples"] = cfg.MODEL.IOU_UNIFORM.GENERATED_SAMPLES
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        """detectron2's pooler and box head, a Linear classifier and the reg + IoU tower."""
        ret = super()._init_box_head(cfg, input_shape)
        channels = input_shape[ret["box_in_features"][0]].channels
        res = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        pooled = ShapeSpec(channels=channels, height=res, width=res)
        ret["box_predictor"] = build_classifier(
            ret["box_head"].output_shape, cfg.MODEL.ROI_HEADS.NUM_CLASSES
        )
        ret["reg_iou_head"] = IoUUniformRegIoUHead(cfg, pooled)
        ret["box2box_transform"] = Box2BoxTransform(cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS)
        return ret

    # ------------------------------------------------------------------ towers
    def classify(self, features, boxes):
        """Classification tower: list[Tensor] features, list[Boxes] → logits (R, C+1)."""
        return self.cls_logits(self.box_pooler(features, boxes))

    def regress(self, features, boxes):
        """Regression + IoU tower: → deltas (R, 4), IoU u (R,) (sigmoid applied if configured)."""
        return self.reg_iou_outputs(self.box_pooler(features, boxes))

    def cls_logits(self, box_features):
        """Classification tower on pooled features: logits (R, C+1)."""
        return self.box_predictor(torch.flatten(self.box_head(box_features), 1))

    def reg_iou_outputs(self, box_features):
        """Regression + IoU tower on pooled features: deltas (R, 4), IoU u (R,)."""
        return self.apply_reg_iou_head(self.reg_iou_head, box_features)

    # ------------------------------------------------------------------ training
    def box_losses(self, features, proposals, targets):
        """{loss_cls, loss_box_reg, loss_iou} of the sampled RoIs and generated samples."""
        losses = self.cls_losses(features, proposals)
        losses.update(self.reg_iou_losses(features, self.reg_iou_samples(proposals, targets)))
        return losses

    def cls_losses(self, features, proposals):
        """Softmax CE of the classification tower over the sampled RPN RoIs."""
        logits = self.classify(features, [p.proposal_boxes for p in proposals])
        gt_classes = cat([p.gt_classes for p in proposals]) if proposals else logits.new_zeros(
            (0,), dtype=torch.int64
        )
        return {"loss_cls": cross_entropy(logits, gt_classes)}

    def reg_iou_samples(self, proposals, targets):
        """Training RoIs of the regression + IoU tower, one ``Instances`` per image with
        ``proposal_boxes``, ``gt_boxes`` (regression targets) and ``gt_ious`` (IoU targets t).

        Generated IoU-uniform samples (Eq. 1) or, with ``generated_samples=False``, the positive
        sampled RPN RoIs (Table 6). GT boxes are not added to the generated samples.
        """
        if self.generated_samples:
            samples = generate_samples(self.sample_generator, targets)
        else:
            samples = []
            for p in proposals:
                p = p[(p.gt_classes >= 0) & (p.gt_classes < self.num_classes)]
                # images without GT have no positives (and no gt_boxes field)
                gt = p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes
                ious = paired_iou(p.proposal_boxes.tensor, gt.tensor)
                samples.append(Instances(p.image_size, proposal_boxes=p.proposal_boxes,
                                         gt_boxes=gt, gt_ious=ious))
        get_event_storage().put_scalar(
            "iou_uniform/num_reg_samples", sum(len(s) for s in samples) / max(len(samples), 1)
        )
        return samples

    def reg_iou_losses(self, features, samples):
        """L_reg (interval-weighted, Eq. 2) and L_iou of the regression + IoU tower."""
        deltas, ious = self.regress(features, [s.proposal_boxes for s in samples])
        loss_reg, loss_iou = reg_iou_loss_terms(
            deltas, ious, samples, self.box2box_transform, self.reg_interval_boundaries,
            self.reg_interval_weights, self.reg_beta, self.iou_beta, self.iou_loss_weight,
        )
        return {"loss_box_reg": loss_reg, "loss_iou": loss_iou}

    # ------------------------------------------------------------------ inference
    def predict(self, features, proposals):
        """§3.2 / Fig. 5: :meth:`refined_candidates`, EFO (IoU at the refined boxes), score,
        NMS. Detections carry ``pred_ious`` (the IoU used for scoring)."""
        refined, probs, ious, _ = self.refined_candidates(features, proposals)
        if self.efo:
            ious = self.efo_ious(features, refined, self.reg_iou_outputs)
        num = [len(b) for b in refined]
        return iou_uniform_inference(
            [b.tensor for b in refined], probs.split(num), ious.split(num),
            [p.image_size for p in proposals], self.score_mode, self.test_score_thresh,
            self.test_nms_thresh, self.test_topk_per_image,
        )

    def refined_candidates(self, features, proposals):
        """The detection candidates before scoring: classify at the proposals, keep the RoIs
        with some p_c above the score threshold, regress them once.

        Returns:
            refined (list[Boxes]): the candidates' refined boxes, per image;
            probs (Tensor): (R, C+1) their class probabilities, images concatenated;
            ious (Tensor): (R,) the IoU u predicted at the proposal (EFO off);
            keep (Tensor): bool mask over the input proposals, images concatenated: the ones
                that are candidates (their order is the order of the R candidates).
        """
        boxes = [p.proposal_boxes for p in proposals]
        box_features = self.box_pooler(features, boxes)  # one pooling for both towers
        probs = F.softmax(self.cls_logits(box_features), dim=-1)
        keep, boxes = self.detection_candidates(probs, boxes)
        deltas, ious = self.reg_iou_outputs(box_features[keep])
        refined = refine_boxes(self.box2box_transform, boxes, deltas,
                               [p.image_size for p in proposals])
        return refined, probs[keep], ious, keep
