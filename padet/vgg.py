"""VGG-16 encoder of PADet in SSD's "reduced fc" form (SSD, Liu et al., ECCV 2016; the paper
pre-trains VGG-16 on ImageNet, §3.3 "Training", and follows SSD's settings).

The VGG convs are torchvision's own ``vgg.make_layers(cfgs["D"])``, so ``features.*`` carries the
parameter names of ``torchvision.models.vgg16``; ``padet.vgg_weights`` converts torchvision's
ImageNet file (fc6/fc7 decimated as in SSD) into a checkpoint for ``MODEL.WEIGHTS``.
"""
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from .layers import extra_stage, msra_init

__all__ = ["PADetVGG16Encoder"]


class PADetVGG16Encoder(nn.Module):
    """E1 = conv4_3 (stride 8), E2 = fc7 (16), E3..E5 = SSD-style extras (32, 64, 128).

    pool3 uses ceil_mode; pool5 is 3x3 stride 1 pad 1; fc6 = 3x3 conv dilation 6, fc7 = 1x1 conv.
    ``width`` scales every channel count (1.0 = VGG-16; smaller for CPU runs); ``vgg_norm`` "BN"
    adds BatchNorm after each VGG conv (torchvision's vgg16_bn layout) for training from scratch.
    """

    def __init__(self, *, width=1.0, vgg_norm="", norm="BN"):
        super().__init__()
        if vgg_norm not in ("", "BN"):
            raise ValueError(f"MODEL.PADET.VGG_NORM must be '' or 'BN', got {vgg_norm!r}")
        if width <= 0:
            raise ValueError(f"MODEL.PADET.VGG_WIDTH must be positive, got {width}")

        def w(c):
            return max(1, int(round(c * width)))

        layout = [v if v == "M" else w(v) for v in cfgs["D"]]
        self.features = make_layers(layout, batch_norm=vgg_norm == "BN")
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        self.features[pools[2]].ceil_mode = True  # pool3
        self.features[pools[4]] = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)  # pool5
        self._conv4_3_end = pools[3]  # features[:pools[3]] ends with conv4_3's ReLU
        c5 = layout[-2]
        self.fc6 = nn.Conv2d(c5, w(1024), 3, padding=6, dilation=6)
        self.fc7 = nn.Conv2d(w(1024), w(1024), 1)
        self.relu = nn.ReLU(inplace=True)
        self.extras = nn.ModuleList([
            extra_stage(w(1024), w(256), w(512), norm=norm),
            extra_stage(w(512), w(128), w(256), norm=norm),
            extra_stage(w(256), w(128), w(256), norm=norm),
        ])
        conv4_3 = [v for v in layout[: [i for i, v in enumerate(layout) if v == "M"][3]]][-1]
        self.out_channels = [conv4_3, w(1024), w(512), w(256), w(256)]
        self.strides = [8, 16, 32, 64, 128]
        msra_init(self)

    def forward(self, x):
        e1 = self.features[: self._conv4_3_end](x)
        x = self.features[self._conv4_3_end:](e1)
        x = self.relu(self.fc7(self.relu(self.fc6(x))))
        outputs = [e1, x]
        for extra in self.extras:
            x = extra(x)
            outputs.append(x)
        return outputs
