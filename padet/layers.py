"""Building blocks shared by PADet's encoder extras, decoder and heads."""
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d, get_norm

__all__ = ["cbr", "extra_stage", "msra_init", "predictor_init"]


def cbr(in_channels, out_channels, kernel_size, *, stride=1, norm="BN"):
    """CBRk-c of the paper (§3): k x k conv (padding k // 2) + norm + ReLU, c output channels."""
    return Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
        bias=not norm, norm=get_norm(norm, out_channels), activation=F.relu,
    )


def extra_stage(in_channels, mid_channels, out_channels, *, norm="BN"):
    """An encoder extra stage: CBR1-mid -> CBR3-out with stride 2, SSD's extra layers in CBR
    form (the paper's text does not give the extra stages' widths; see docs/padet.md)."""
    return nn.Sequential(
        cbr(in_channels, mid_channels, 1, norm=norm),
        cbr(mid_channels, out_channels, 3, stride=2, norm=norm),
    )


def msra_init(module):
    """MSRA init of new layers (paper §3.3 "Training", [35]): He normal (fan_out) conv weights,
    zero biases; norm layers keep weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def predictor_init(convs):
    """Prediction convs (APM and detection outputs): N(0, 0.01) weights, zero biases, as
    detectron2's RPN/RetinaNet heads; MSRA here gives initial logits of magnitude ~5 (project
    decision)."""
    for conv in convs:
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(conv.bias)
