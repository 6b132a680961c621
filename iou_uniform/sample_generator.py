"""IoU-uniform training samples made by jittering GT boxes (paper Eq. 1, §3.1).

For each GT box and each IoU interval (lo, hi] the generator draws ``num_attempts`` candidates
with centre (cx + w·ox, cy + h·oy) and size (w·sw, h·sh), ox, oy ~ U(-s, s), sw, sh ~ U(lo', hi'),
clips them to the image, and keeps those whose IoU t with this GT lies in the interval (and,
with the argmax filter, whose best-matching GT of the image is this GT). At most
``num_per_interval`` survivors per (GT, interval) are kept, chosen uniformly at random. Everything
is batched over GTs, intervals and attempts; random numbers come from torch's global generator.
"""
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch

from detectron2.config import configurable
from detectron2.structures import Boxes, pairwise_iou

__all__ = [
    "IoUUniformSamples", "IoUUniformSampleGenerator", "intervals_from_boundaries", "paired_iou"
]


def intervals_from_boundaries(boundaries):
    """[u0, u1, ..., un] -> [(u0, u1), ..., (u_{n-1}, u_n)], checking that they increase."""
    b = [float(x) for x in boundaries]
    if len(b) < 2 or any(lo >= hi for lo, hi in zip(b[:-1], b[1:])):
        raise ValueError(f"IoU interval boundaries must increase, got {list(boundaries)}")
    return list(zip(b[:-1], b[1:]))


@dataclass
class IoUUniformSamples:
    """Generated samples of one image (M of them)."""

    boxes: torch.Tensor  # (M, 4) XYXY, clipped to the image
    ious: torch.Tensor  # (M,) IoU target t with its own GT, computed after clipping
    gt_inds: torch.Tensor  # (M,) int64 index of its GT (regression target)
    interval_inds: torch.Tensor  # (M,) int64 index of the interval that generated it

    def __len__(self):
        return self.boxes.shape[0]


def paired_iou(a, b):
    """IoU of boxes a[..., 4] and b[..., 4], pair by pair (XYXY, no "+1"); 0 for an empty union."""
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


class IoUUniformSampleGenerator:
    """Generate IoU-uniform samples around GT boxes (Eq. 1, §3.1); see the module docstring."""

    @configurable
    def __init__(
        self,
        *,
        intervals: Sequence[Tuple[float, float]],
        center_offsets: Sequence[float],
        scale_ranges: Sequence[Tuple[float, float]],
        num_per_interval: int = 16,
        num_attempts: int = 500,
        argmax_filter: bool = True,
    ):
        """
        Args:
            intervals: IoU intervals (lo, hi], lower-open and upper-closed; they may overlap.
            center_offsets: s_j per interval, centre offsets drawn from U(-s_j, s_j) (× GT w, h).
            scale_ranges: (lo_j, hi_j) per interval, width and height scales from U(lo_j, hi_j).
            num_per_interval: samples kept per GT and interval at most.
            num_attempts: candidates drawn per GT and interval (once, no retry).
            argmax_filter: keep a sample only if its own GT has the highest IoU with it over all
                GTs of the image (ties: the lowest GT index wins).
        """
        n = len(intervals)
        if not (n and len(center_offsets) == n and len(scale_ranges) == n):
            raise ValueError(
                f"IoU-uniform generator: {n} intervals need as many centre offsets and scale "
                f"ranges, got {len(center_offsets)} and {len(scale_ranges)}"
            )
        for lo, hi in intervals:
            if not 0.0 <= lo < hi <= 1.0:
                raise ValueError(f"IoU interval ({lo}, {hi}] is not inside [0, 1]")
        for lo, hi in scale_ranges:
            if not 0.0 < lo <= hi:
                raise ValueError(f"scale range [{lo}, {hi}] must satisfy 0 < lo <= hi")
        if num_per_interval < 1 or num_attempts < 1:
            raise ValueError("num_per_interval and num_attempts must be positive")
        self.intervals = torch.tensor([list(map(float, i)) for i in intervals])  # (J, 2)
        self.center_offsets = torch.tensor([float(s) for s in center_offsets])  # (J,)
        self.scale_ranges = torch.tensor([list(map(float, r)) for r in scale_ranges])  # (J, 2)
        self.num_per_interval = int(num_per_interval)
        self.num_attempts = int(num_attempts)
        self.argmax_filter = bool(argmax_filter)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.IOU_UNIFORM
        return {
            "intervals": intervals_from_boundaries(c.INTERVALS),
            "center_offsets": c.CENTER_OFFSETS,
            "scale_ranges": c.SCALE_RANGES,
            "num_per_interval": c.NUM_PER_INTERVAL,
            "num_attempts": c.NUM_ATTEMPTS,
            "argmax_filter": c.ARGMAX_FILTER,
        }

    @property
    def num_intervals(self):
        return self.intervals.shape[0]

    def _draw_candidates(self, gt, image_size):
        """(K, J, A, 4) clipped candidate boxes around every GT for every interval."""
        K, J, A = gt.shape[0], self.num_intervals, self.num_attempts
        dev, dt = gt.device, gt.dtype
        s = self.center_offsets.to(dev, dt)[None, :, None, None]  # (1, J, 1, 1)
        lo = self.scale_ranges[:, 0].to(dev, dt)[None, :, None, None]
        hi = self.scale_ranges[:, 1].to(dev, dt)[None, :, None, None]
        u = torch.rand(K, J, A, 4, device=dev, dtype=dt)
        offsets = (2 * u[..., :2] - 1) * s  # (ox, oy)
        scales = lo + (hi - lo) * u[..., 2:]  # (sw, sh)
        wh = (gt[:, 2:] - gt[:, :2])[:, None, None, :]  # (K, 1, 1, 2)
        ctr = ((gt[:, :2] + gt[:, 2:]) / 2)[:, None, None, :]
        new_ctr = ctr + wh * offsets
        half = wh * scales / 2
        boxes = torch.cat([new_ctr - half, new_ctr + half], dim=-1)
        h, w = image_size
        limit = boxes.new_tensor([w, h, w, h])
        return torch.minimum(boxes.clamp(min=0), limit)

    def __call__(self, gt_boxes, image_size) -> IoUUniformSamples:
        """
        Args:
            gt_boxes (Tensor or Boxes): (K, 4) XYXY GT boxes of one image (crowd boxes removed).
            image_size (tuple): (H, W) of the (resized) image.
        """
        gt = gt_boxes.tensor if isinstance(gt_boxes, Boxes) else gt_boxes
        if gt.dim() != 2 or gt.shape[-1] != 4:
            raise ValueError(f"gt_boxes must be (K, 4) XYXY, got shape {tuple(gt.shape)}")
        gt = gt.float()
        K, J, A = gt.shape[0], self.num_intervals, self.num_attempts
        if K == 0:
            empty = gt.new_zeros((0,), dtype=torch.int64)
            return IoUUniformSamples(gt.new_zeros((0, 4)), gt.new_zeros((0,)), empty, empty)
        boxes = self._draw_candidates(gt, image_size)  # (K, J, A, 4)
        ious = paired_iou(boxes, gt[:, None, None, :])  # (K, J, A), after clipping
        bounds = self.intervals.to(gt.device, gt.dtype)
        valid = (ious > bounds[None, :, 0, None]) & (ious <= bounds[None, :, 1, None])
        if self.argmax_filter and K > 1:
            # IoU with every GT, only for the survivors of the interval test (about 7%)
            idx = valid.nonzero(as_tuple=True)
            iou_all = pairwise_iou(Boxes(boxes[idx]), Boxes(gt))  # (n, K)
            own_is_best = iou_all.argmax(dim=1) == idx[0]  # first maximum: lowest index wins
            valid[idx] = own_is_best
        # at most num_per_interval valid candidates per (GT, interval), uniformly at random
        keys = torch.rand(K, J, A, device=gt.device).masked_fill(~valid, float("-inf"))
        top_keys, top = keys.topk(min(self.num_per_interval, A), dim=2)  # (K, J, m)
        picked = top_keys > float("-inf")
        gt_inds = torch.arange(K, device=gt.device)[:, None, None].expand_as(top)[picked]
        interval_inds = torch.arange(J, device=gt.device)[None, :, None].expand_as(top)[picked]
        attempt_inds = top[picked]
        return IoUUniformSamples(
            boxes=boxes[gt_inds, interval_inds, attempt_inds],
            ious=ious[gt_inds, interval_inds, attempt_inds],
            gt_inds=gt_inds,
            interval_inds=interval_inds,
        )
