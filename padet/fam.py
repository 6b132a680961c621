"""Feature Alignment Module (FAM, paper §3.2, Fig. 5, Table 1): a 3x3 deformable conv whose
offsets come from the APM's anchor-adjustment output."""
import torch
from torch import nn
from torchvision.ops import deform_conv2d

from detectron2.layers import get_norm

__all__ = ["FeatureAlignmentModule", "FAM_MODES"]

# Table 1: w/o alignment, (a) implicit, (b) F(X_l), F(X_s), F(X_l; X_s), (c) disentangled
FAM_MODES = ("none", "implicit", "loc", "shape", "concat", "disentangled")


class FeatureAlignmentModule(nn.Module):
    """y = ReLU(BN(DCN_3x3(h, offsets))), one offset set per location shared by its A anchors.

    Offsets (2K = 18 channels; channel 2k is dy and 2k+1 is dx of kernel point k, row-major):
        "disentangled" (c): c = F(X_l) (1x1, 2A -> 2) shared by all K points, plus the residual
            ds = G(X_s) (1x1, 2A -> 2K): offsets = ds + [c, c, ..., c];
        "loc" / "shape" / "concat" (b): 1x1 conv of X_l / X_s / [X_l; X_s] -> 2K;
        "implicit" (a): 3x3 conv of h -> 2K (standard DCN);
        "none": no alignment, y = h.
    X_l (dx, dy of every anchor) and X_s (dw, dh) are split from the APM delta map (N, 4A, H, W)
    viewed as (N, A, 4, H, W), detached when ``detach``. Offset convs start at zero, so the FAM
    starts as a regular 3x3 conv.
    """

    kernel_points = 9

    def __init__(self, channels, num_anchors, *, mode="disentangled", detach=True, norm="BN"):
        super().__init__()
        if mode not in FAM_MODES:
            raise ValueError(f"MODEL.PADET.FAM_MODE must be one of {FAM_MODES}, got {mode!r}")
        self.mode, self.detach, self.num_anchors = mode, detach, num_anchors
        if mode == "none":
            return
        k2 = 2 * self.kernel_points
        if mode == "implicit":
            self.offset_conv = nn.Conv2d(channels, k2, 3, padding=1)
        elif mode == "disentangled":
            self.shift_conv = nn.Conv2d(2 * num_anchors, 2, 1)  # F(X_l) -> c
            self.offset_conv = nn.Conv2d(2 * num_anchors, k2, 1)  # G(X_s) -> ds
        else:
            in_ch = {"loc": 2, "shape": 2, "concat": 4}[mode] * num_anchors
            self.offset_conv = nn.Conv2d(in_ch, k2, 1)
        for conv in (self.offset_conv, getattr(self, "shift_conv", None)):
            if conv is not None:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
        self.weight = nn.Parameter(torch.empty(channels, channels, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.norm = get_norm(norm, channels) or nn.Identity()

    def split_deltas(self, apm_deltas):
        """X_l, X_s (N, 2A, H, W) each, from the APM delta map (N, 4A, H, W)."""
        n, _, h, w = apm_deltas.shape
        d = apm_deltas.detach() if self.detach else apm_deltas
        d = d.view(n, self.num_anchors, 4, h, w)
        return d[:, :, :2].reshape(n, -1, h, w), d[:, :, 2:].reshape(n, -1, h, w)

    def offsets(self, h, apm_deltas):
        """The (N, 2K, H, W) DCN offsets of ``mode``."""
        if self.mode == "implicit":
            return self.offset_conv(h)
        x_l, x_s = self.split_deltas(apm_deltas)
        if self.mode == "disentangled":
            shift = self.shift_conv(x_l)
            return self.offset_conv(x_s) + shift.repeat(1, self.kernel_points, 1, 1)
        source = {"loc": x_l, "shape": x_s}.get(self.mode)
        return self.offset_conv(source if source is not None else torch.cat([x_l, x_s], 1))

    def forward(self, h, apm_deltas):
        if self.mode == "none":
            return h
        # in the weight's dtype (float32 under AMP), as torchvision's CUDA autocast kernel runs
        # it; its CPU kernel has no bfloat16
        dtype = self.weight.dtype
        y = deform_conv2d(h.to(dtype), self.offsets(h, apm_deltas).to(dtype), self.weight,
                          padding=(1, 1))
        return torch.relu(self.norm(y))
