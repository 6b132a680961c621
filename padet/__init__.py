"""PADet (PosNeg-balanced anchors with aligned features)."""
from . import apm as _apm  # registration: AnchorPromotionModule
from . import encoder_decoder as _encoder_decoder  # registration: PADet backbones
from . import meta_arch as _meta_arch  # registration: PADet
from .config import add_padet_config

__all__ = ["add_padet_config"]
