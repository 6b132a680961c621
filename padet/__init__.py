"""PADet (PosNeg-balanced anchors with aligned features)."""
from .config import add_padet_config

__all__ = ["add_padet_config"]
