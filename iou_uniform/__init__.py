"""IoU-uniform R-CNN (Zhu et al., arXiv 1912.05190): IoU-uniform sample generator, ROI heads
with separate classification and regression + IoU towers, EFO inference, Cascade variant."""
from . import cascade_roi_heads as _  # registration
from . import roi_heads as _  # registration  # noqa: F811
from .cascade_roi_heads import IoUUniformCascadeROIHeads
from .config import add_iou_uniform_config
from .roi_heads import IoUUniformROIHeads
from .sample_generator import (
    IoUUniformSampleGenerator, IoUUniformSamples, check_samples_exact,
)

__all__ = [
    "add_iou_uniform_config",
    "IoUUniformCascadeROIHeads",
    "IoUUniformROIHeads",
    "IoUUniformSampleGenerator",
    "IoUUniformSamples",
    "check_samples_exact",
]
