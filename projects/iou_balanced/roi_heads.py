"""IoU-balanced ROI heads: Faster R-CNN whose box head uses the IoU-balanced losses (Table 7)."""
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads

from .fast_rcnn import IoUBalancedFastRCNNOutputLayers

__all__ = ["IoUBalancedROIHeads"]


@ROI_HEADS_REGISTRY.register()
class IoUBalancedROIHeads(StandardROIHeads):
    """``StandardROIHeads`` with :class:`IoUBalancedFastRCNNOutputLayers` as box predictor.

    Only the second stage's losses change (the RPN keeps its own); the predictor reads
    ``MODEL.IOU_BALANCED``. Mask and keypoint heads, if enabled, are detectron2's.
    """

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = IoUBalancedFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        return ret
