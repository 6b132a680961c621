"""PADet's encoder-decoder backbone (paper §3, Fig. 3) with a VGG-16 or ResNet encoder."""
import torch.nn.functional as F
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from .config import PADET_SIZE_DIVISIBILITY
from .layers import cbr, extra_stage, msra_init
from .vgg import PADetVGG16Encoder

__all__ = [
    "PADetEncoderDecoder",
    "PADetResNetEncoder",
    "build_padet_vgg16_backbone",
    "build_padet_resnet_backbone",
]


class PADetResNetEncoder(nn.Module):
    """E1..E3 = detectron2 ResNet's res3..res5 (strides 8, 16, 32); E4 = CBR1-256 -> CBR3-512
    stride 2, E5 = CBR1-128 -> CBR3-256 stride 2 (strides 64, 128). The ResNet keeps detectron2's
    parameter names (``bottom_up.res2...``), so detectron2's ImageNet weights load."""

    def __init__(self, bottom_up, *, norm="BN"):
        super().__init__()
        names = bottom_up._out_features
        if names != ["res3", "res4", "res5"]:
            raise ValueError(f"PADet's ResNet encoder needs MODEL.RESNETS.OUT_FEATURES "
                             f"['res3', 'res4', 'res5'], got {names}")
        self.bottom_up = bottom_up
        shapes = bottom_up.output_shape()
        c5 = shapes["res5"].channels
        self.extras = nn.ModuleList([
            extra_stage(c5, 256, 512, norm=norm), extra_stage(512, 128, 256, norm=norm)
        ])
        msra_init(self.extras)
        self.out_channels = [shapes[n].channels for n in names] + [512, 256]
        self.strides = [shapes[n].stride for n in names] + [shapes["res5"].stride * 2,
                                                            shapes["res5"].stride * 4]

    def forward(self, x):
        feats = self.bottom_up(x)
        outputs = [feats["res3"], feats["res4"], feats["res5"]]
        for extra in self.extras:
            outputs.append(extra(outputs[-1]))
        return outputs


class PADetEncoderDecoder(Backbone):
    """Encoder levels E1..E5 -> decoded levels ``d1``..``d6`` (paper §3).

    Skip blocks S_i = CBR3-c(E_i). Top-down: T5 = S5(E5), T_i = S_i(E_i) + CBR1-c(bilinear
    upsample of T_{i+1} to E_i's size). D_i = CBR3-c(T_i); D6 = CBR3-c(3x3 stride-2 max-pool of
    D5), the window clipped to maps smaller than 3 (3 -> 1 at 384, 4 -> 1 at 512). The paper
    gives the bilinear upsampling, CBR1-256, element-wise addition and the CBR3-256 after each
    decoded level; it says only that all skips are identical and that D6 "directly
    down-samples" D5, so the skip block and the max-pool are our choices.
    """

    def __init__(self, encoder, *, channels=256, norm="BN",
                 size_divisibility=PADET_SIZE_DIVISIBILITY):
        super().__init__()
        if len(encoder.out_channels) != 5:
            raise ValueError(f"PADet's encoder must give 5 levels, got {len(encoder.out_channels)}")
        self.encoder = encoder
        self.skips = nn.ModuleList(cbr(c, channels, 3, norm=norm) for c in encoder.out_channels)
        self.upsample_convs = nn.ModuleList(cbr(channels, channels, 1, norm=norm) for _ in range(4))
        self.output_convs = nn.ModuleList(cbr(channels, channels, 3, norm=norm) for _ in range(6))
        msra_init(self.skips)
        msra_init(self.upsample_convs)
        msra_init(self.output_convs)
        self._size_divisibility = size_divisibility
        self._out_features = [f"d{i}" for i in range(1, 7)]
        strides = list(encoder.strides) + [encoder.strides[-1] * 2]
        self._out_feature_strides = dict(zip(self._out_features, strides))
        self._out_feature_channels = {f: channels for f in self._out_features}

    @property
    def size_divisibility(self):
        return self._size_divisibility

    def forward(self, x):
        encoded = self.encoder(x)
        t = self.skips[4](encoded[4])
        decoded = [t]
        for i in range(3, -1, -1):
            up = F.interpolate(t, size=encoded[i].shape[-2:], mode="bilinear", align_corners=False)
            t = self.skips[i](encoded[i]) + self.upsample_convs[i](up)
            decoded.insert(0, t)
        outputs = [conv(t) for conv, t in zip(self.output_convs, decoded)]
        d5 = outputs[4]
        window = (min(3, d5.shape[-2]), min(3, d5.shape[-1]))
        outputs.append(self.output_convs[5](F.max_pool2d(d5, window, stride=2)))
        return dict(zip(self._out_features, outputs))


@BACKBONE_REGISTRY.register()
def build_padet_vgg16_backbone(cfg, input_shape):
    """PADet encoder-decoder on SSD's reduced-fc VGG-16 (``MODEL.PADET.VGG_*``)."""
    p = cfg.MODEL.PADET
    encoder = PADetVGG16Encoder(width=p.VGG_WIDTH, vgg_norm=p.VGG_NORM, norm=p.NORM)
    return PADetEncoderDecoder(encoder, channels=p.CHANNELS, norm=p.NORM)


@BACKBONE_REGISTRY.register()
def build_padet_resnet_backbone(cfg, input_shape):
    """PADet encoder-decoder on detectron2's ResNet (``MODEL.RESNETS.*``, e.g. DEPTH 101)."""
    p = cfg.MODEL.PADET
    encoder = PADetResNetEncoder(build_resnet_backbone(cfg, input_shape), norm=p.NORM)
    return PADetEncoderDecoder(encoder, channels=p.CHANNELS, norm=p.NORM)
