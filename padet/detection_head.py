"""PADet's detection head (paper §3.3, Fig. 3): per level CBR3-c -> FAM -> softmax
classification (C + 1 with background) and box regression relative to the promoted anchors."""
from torch import nn

from detectron2.config import configurable

from .apm import build_padet_anchor_generator
from .fam import FeatureAlignmentModule
from .layers import cbr, msra_init, predictor_init

__all__ = ["PADetDetectionHead"]


class PADetDetectionHead(nn.Module):
    """No sharing across levels. FAM on the first ``fam_levels`` levels (D1-D4), y = h on the
    last two (their maps are too small, §3.3)."""

    @configurable
    def __init__(self, *, in_channels, num_anchors, num_classes, fam_mode="disentangled",
                 fam_levels=4, fam_detach=True, norm="BN"):
        super().__init__()
        self.num_classes = num_classes
        self.convs = nn.ModuleList(cbr(in_channels, in_channels, 3, norm=norm) for _ in num_anchors)
        self.fams = nn.ModuleList(
            FeatureAlignmentModule(in_channels, a, mode=fam_mode if i < fam_levels else "none",
                                   detach=fam_detach, norm=norm)
            for i, a in enumerate(num_anchors))
        self.cls_score = nn.ModuleList(
            nn.Conv2d(in_channels, a * (num_classes + 1), 3, padding=1) for a in num_anchors)
        self.bbox_pred = nn.ModuleList(
            nn.Conv2d(in_channels, 4 * a, 3, padding=1) for a in num_anchors)
        msra_init(self.convs)
        predictor_init([*self.cls_score, *self.bbox_pred])

    @property
    def uses_apm_deltas(self):
        """Whether some FAM takes its offsets from the APM's deltas (X_l, X_s)."""
        return any(f.mode not in ("none", "implicit") for f in self.fams)

    @classmethod
    def from_config(cls, cfg, input_shape):
        p = cfg.MODEL.PADET
        return {
            "in_channels": p.CHANNELS,
            "num_anchors": build_padet_anchor_generator(cfg).num_anchors,
            "num_classes": p.NUM_CLASSES,
            "fam_mode": p.FAM_MODE,
            "fam_levels": p.FAM_LEVELS,
            "fam_detach": p.FAM_DETACH,
            "norm": p.NORM,
        }

    def forward(self, features, apm_delta_maps):
        """Per-level class logit maps (N, A(C+1), H, W) and delta maps (N, 4A, H, W).
        ``apm_delta_maps`` is None without the APM's adjustment branch (FAM "none", "implicit")."""
        logits, deltas = [], []
        for i, x in enumerate(features):
            y = self.aligned_features(i, x, None if apm_delta_maps is None else apm_delta_maps[i])
            logits.append(self.cls_score[i](y))
            deltas.append(self.bbox_pred[i](y))
        return logits, deltas

    def aligned_features(self, level, x, apm_deltas):
        """The features the class and box convs of ``level`` read: CBR3 of the decoded map
        ``x``, then the FAM with that level's APM delta map (None without adjustment)."""
        return self.fams[level](self.convs[level](x), apm_deltas)
