"""PRM over IoU-uniform R-CNN (project combination of Sec. 3.2 with ``IoUUniformROIHeads``).

In IoU-uniform R-CNN only the classification tower trains on sampled RPN proposals; the
regression + IoU tower trains on IoU-uniform samples generated around the GT, independently
of the positive fraction. So the parallel modules are K classification towers
(``box_head[k]`` + ``box_predictor[k]``), each with its own soft sample of the same labelled
proposals; the single regression + IoU tower (``reg_iou_head``) is shared. At test time the
towers' pre-softmax logits are averaged (or ``TEST_MODULE`` alone is used) and IoU-uniform's
EFO inference proceeds unchanged. RGA scales all K towers and the regression + IoU tower.
"""
import torch
from torch import nn

from detectron2.layers import cat, cross_entropy
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY
from detectron2.modeling.roi_heads.fast_rcnn import _log_classification_stats
from detectron2.utils.events import get_event_storage
from iou_uniform import IoUUniformROIHeads

from .parallel_roi_heads import PRMHeadsMixin, log_background_accuracy
from .sampling import label_proposals

__all__ = ["ParallelIoUUniformROIHeads"]


@ROI_HEADS_REGISTRY.register()
class ParallelIoUUniformROIHeads(PRMHeadsMixin, IoUUniformROIHeads):
    """IoU-uniform ROI heads with K parallel classification towers (PRM)."""

    prm_module_name = "classification towers"

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        # K classification towers; pooler, regression + IoU tower and box coder of one build
        return cls._init_module_box_heads(
            cfg, input_shape, ("box_head", "box_predictor"), nn.ModuleList)

    def module_logits(self, k, box_features):
        """Classification tower k at pooled features: logits (R, C+1)."""
        return self.box_predictor[k](torch.flatten(self.box_head[k](box_features), 1))

    def cls_logits(self, box_features):
        """Test time: mean of the towers' pre-softmax logits (Sec. 3.2), or TEST_MODULE's."""
        modules = [self.prm.test_module] if self.prm.test_module >= 0 else range(len(self.box_head))
        return torch.stack([self.module_logits(k, box_features) for k in modules]).mean(dim=0)

    def _box_losses(self, features, proposals, targets):
        """Every tower's weighted L_cls on its own sample of the labelled proposals; L_reg and
        L_iou of the shared regression + IoU tower on generated samples, or on the primary
        module's positive RoIs when MODEL.IOU_UNIFORM.GENERATED_SAMPLES is False. Returns the
        losses and the primary module's sample (for mask / keypoint branches)."""
        labelled = label_proposals(proposals, targets, self.proposal_matcher, self.num_classes)
        module_proposals = self.prm.sample(labelled, self.num_classes)
        primary = module_proposals[self.prm.primary_module]
        features = [features[f] for f in self.box_in_features]
        losses = {}
        for k, sampled in enumerate(module_proposals):
            losses.update(self._module_cls_loss(k, features, sampled))
        losses.update(self.reg_iou_losses(features, self.reg_iou_samples(primary, targets)))
        return losses, primary

    def _module_cls_loss(self, k, features, proposals):
        """Tower k's softmax CE over its own sampled RoIs, weighted by w_k; logs its accuracy
        on positive and negative RoIs under ``m<k>/fast_rcnn/``."""
        box_features = self.box_pooler(features, [p.proposal_boxes for p in proposals])
        logits = self.module_logits(k, box_features)
        gt_classes = cat([p.gt_classes for p in proposals]) if proposals else logits.new_zeros(
            (0,), dtype=torch.int64)
        with get_event_storage().name_scope(f"m{k}"):
            _log_classification_stats(logits, gt_classes)
            log_background_accuracy(logits, proposals)
        return {f"loss_cls_m{k}": cross_entropy(logits, gt_classes) * self.prm.loss_weights[k]}
