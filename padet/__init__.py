"""PADet (PosNeg-balanced anchors with aligned features)."""
from . import encoder_decoder as _  # registration
from .config import add_padet_config

__all__ = ["add_padet_config"]
