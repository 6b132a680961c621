"""The regression + IoU tower of IoU-uniform R-CNN (paper §3.1, Fig. 4): its own 2-FC trunk,
then class-agnostic box deltas and one IoU output, trained on IoU-uniform samples only."""
import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import build_box_head

__all__ = ["IoUUniformRegIoUHead"]


class IoUUniformRegIoUHead(nn.Module):
    """``trunk`` (the ROI box head, e.g. 2 × FC + ReLU) → ``bbox_pred`` (4) and ``iou_pred`` (1)."""

    @configurable
    def __init__(self, *, trunk: nn.Module, init: str = "detectron2"):
        """
        Args:
            trunk: feature tower with an ``output_shape`` (a ``build_box_head`` product).
            init: "detectron2" (trunk as built: c2_xavier_fill FCs; deltas N(0, 0.001), IoU
                N(0, 0.01), biases 0) or "torch_default" (PyTorch's default init everywhere).
        """
        super().__init__()
        self.trunk = trunk
        shape = trunk.output_shape
        dim = shape.channels * (shape.height or 1) * (shape.width or 1)
        self.bbox_pred = nn.Linear(dim, 4)
        self.iou_pred = nn.Linear(dim, 1)
        if init == "detectron2":
            nn.init.normal_(self.bbox_pred.weight, std=0.001)
            nn.init.normal_(self.iou_pred.weight, std=0.01)
            for layer in (self.bbox_pred, self.iou_pred):
                nn.init.constant_(layer.bias, 0)
        elif init == "torch_default":
            for m in self.trunk.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    m.reset_parameters()
        else:
            raise ValueError(f"MODEL.IOU_UNIFORM.INIT must be 'detectron2' or 'torch_default', "
                             f"got {init!r}")

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        return {"trunk": build_box_head(cfg, input_shape), "init": cfg.MODEL.IOU_UNIFORM.INIT}

    def forward(self, x):
        """Pooled features (R, C, h, w) → deltas (R, 4) and raw IoU predictions u (R,)."""
        x = self.trunk(x)
        x = torch.flatten(x, start_dim=1)
        return self.bbox_pred(x), self.iou_pred(x).squeeze(1)
