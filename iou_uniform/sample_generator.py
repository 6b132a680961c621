"""IoU-uniform training samples made by jittering GT boxes (paper Eq. 1, §3.1).

For each GT box and each IoU interval (lo, hi] the generator draws ``num_attempts`` candidates
with centre (cx + w·ox, cy + h·oy) and size (w·sw, h·sh), ox, oy ~ U(-s, s), sw, sh ~ U(lo', hi'),
clips them to the image, and keeps those whose IoU t with this GT lies in the interval (and,
with the argmax filter, whose best-matching GT of the image is this GT). At most
``num_per_interval`` survivors per (GT, interval) are kept, chosen uniformly at random. Everything
is batched over GTs, intervals and attempts; the random numbers are seeded from torch's global
generator, so ``torch.manual_seed`` (and detectron2's seeding) reproduces them.

An image with more than ``max_gts`` GTs gets samples around ``max_gts`` of them, drawn at random
(``torch.randperm``): time and memory grow with the GTs that get samples (docs/iou_uniform.md).
The argmax filter still compares each sample with every GT of the image.

:func:`check_samples_exact` is the generator's exactness check on the GTs' device (its tests
and ``tools/gpu_smoke.py`` run it; random numbers come from numpy on CPU, from torch elsewhere).
"""
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.structures import Boxes, pairwise_iou

__all__ = [
    "IoUUniformSamples", "IoUUniformSampleGenerator", "intervals_from_boundaries", "paired_iou",
    "check_samples_exact",
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


def paired_iou(a, b, dim=-1):
    """IoU of boxes a and b, pair by pair (XYXY along ``dim``, no "+1"); 0 for an empty union.
    For targets and bookkeeping: its in-place ops do not support autograd."""
    ax0, ay0, ax1, ay1 = a.unbind(dim)
    bx0, by0, bx1, by1 = b.unbind(dim)
    inter = torch.minimum(ax1, bx1).sub_(torch.maximum(ax0, bx0)).clamp_(min=0)
    inter.mul_(torch.minimum(ay1, by1).sub_(torch.maximum(ay0, by0)).clamp_(min=0))
    union = ((ax1 - ax0).mul_(ay1 - ay0) + (bx1 - bx0) * (by1 - by0)).sub_(inter)
    return inter.div_(union).masked_fill_(union <= 0, 0.0)


# scale of the 16-bit integers of ``_random_int16``: value * INT16_UNIT lies in [-1, 1)
INT16_UNIT = 2.0 ** -15


def _random_int16(*shape, device):
    """Uniform random int16 of ``shape`` (times ``INT16_UNIT``: U[-1, 1) with 2^-15 resolution),
    four per 64-bit random word; the float conversion is left to the op that scales them.

    Random numbers are the generator's hot spot. On CPU the words come from numpy's SFC64,
    seeded from torch's global generator (so ``torch.manual_seed`` reproduces them): about 2x
    faster than ``torch.randint``'s Mersenne Twister and 6x faster than ``torch.rand`` for the
    same numbers. Elsewhere ``torch.randint`` draws them on the device."""
    n = 1
    for d in shape:
        n *= d
    num_words = (n + 3) // 4
    if torch.device(device).type == "cpu":
        seed = int(torch.randint(0, 2 ** 62, (1,)))
        words = torch.from_numpy(np.random.SFC64(seed).random_raw(num_words).view(np.int64))
    else:
        words = torch.randint(-(2 ** 63), 2 ** 63 - 1, (num_words,), device=device)
    return words.view(torch.int16)[:n].view(shape)


def _group_sizes_and_starts(group, num_groups):
    """For a sorted 1-D tensor of group ids in [0, num_groups): each group's size and the
    position of its first element, (num_groups,) each."""
    size = torch.bincount(group, minlength=num_groups)
    return size, size.cumsum(0) - size


def _rank_in_sorted_groups(group, num_groups):
    """0, 1, 2, ... within each run of equal values of a sorted 1-D tensor of group ids."""
    start = _group_sizes_and_starts(group, num_groups)[1]
    return torch.arange(len(group), device=group.device) - start.index_select(0, group)


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
        max_gts: int = 0,
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
            max_gts: generate samples around at most this many GTs of an image, drawn at random
                when it has more (0: every GT).
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
        if max_gts < 0:
            raise ValueError(f"max_gts must be >= 0 (0: no cap), got {max_gts}")
        self.intervals = torch.tensor([list(map(float, i)) for i in intervals])  # (J, 2)
        self.center_offsets = torch.tensor([float(s) for s in center_offsets])  # (J,)
        self.scale_ranges = torch.tensor([list(map(float, r)) for r in scale_ranges])  # (J, 2)
        self.num_per_interval = int(num_per_interval)
        self.num_attempts = int(num_attempts)
        self.argmax_filter = bool(argmax_filter)
        self.max_gts = int(max_gts)

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
            "max_gts": c.MAX_GTS_PER_IMAGE,
        }

    @property
    def num_intervals(self):
        return self.intervals.shape[0]

    def _draw_candidates(self, gt, image_size):
        """(4, K, J, A) clipped candidates around every GT for every interval, as x0, y0, x1, y1
        planes (contiguous per coordinate, which keeps the elementwise work cheap)."""
        K, J, A = gt.shape[0], self.num_intervals, self.num_attempts
        dev, dt = gt.device, gt.dtype
        z = _random_int16(4, K, J, A, device=dev)  # ox / s, oy / s, and the two scales
        s = self.center_offsets.to(dev, dt)[:, None] * INT16_UNIT  # (J, 1)
        lo, hi = self.scale_ranges.to(dev, dt)[:, None].unbind(-1)  # (J, 1) each
        half_mid, half_span = (lo + hi) / 4, (hi - lo) / 4 * INT16_UNIT  # sw / 2 = mid + span·z
        h, w = image_size
        planes = torch.empty(4, K, J, A, device=dev, dtype=dt)
        for axis, limit in ((0, w), (1, h)):
            size = (gt[:, axis + 2] - gt[:, axis])[:, None, None]  # (K, 1, 1)
            ctr = ((gt[:, axis] + gt[:, axis + 2]) / 2)[:, None, None]
            # two passes each: faster on CPU than addcmul with broadcast (and int16) operands
            centre = (z[axis] * (size * s)).add_(ctr)  # cx + w·ox, ox ~ U(-s, s)
            half = (z[axis + 2] * (size * half_span)).add_(size * half_mid)  # w·sw / 2
            torch.sub(centre, half, out=planes[axis]).clamp_(0, limit)
            torch.add(centre, half, out=planes[axis + 2]).clamp_(0, limit)
        return planes

    def _own_gt_is_best(self, boxes, ious, group, gt, own_inds=None):
        """For candidates ``boxes`` (n, 4) with IoU ``ious`` to their own GT, ``group`` = own GT
        position × J + interval index, the own GTs ``gt[own_inds]`` (default: every GT): True
        where no GT of ``gt`` has a higher IoU (ties: the lowest GT index wins). The Jaccard
        distance 1 - IoU is a metric, so a rival GT k with IoU(c, k) >= IoU(c, own) = t > lo
        needs IoU(own, k) >= 2t - 1 > 2lo - 1: only those rivals of each (GT, interval) are
        compared (all GTs for intervals below 0.5)."""
        K, J = gt.shape[0], self.num_intervals
        if own_inds is None:
            own_inds = torch.arange(K, device=gt.device)
        num_own = own_inds.shape[0]
        lo = self.intervals[:, 0].to(gt.device, gt.dtype)
        # strict bound with a float margin; any IoU >= 0 passes -1 (intervals below 0.5)
        bound = torch.where(lo >= 0.5, (2 * lo - 1 - 1e-6).clamp(min=0), torch.full_like(lo, -1))
        gt_iou = paired_iou(gt.index_select(0, own_inds)[:, None, :], gt[None, :, :])  # (Ko, K)
        gt_iou[torch.arange(num_own, device=gt.device), own_inds] = -1
        rivals = (gt_iou[:, None, :] > bound[None, :, None]).view(num_own * J, K)
        pair_group, pair_gt = rivals.nonzero(as_tuple=True)  # (GT, interval) -> a rival GT
        # each (group, rival) pair is compared with every candidate of the group: a contiguous
        # run of candidates (``group`` is sorted), expanded without a per-candidate gather
        size, start = _group_sizes_and_starts(group, num_own * J)
        length = size.index_select(0, pair_group)
        total = int(length.sum())
        first = start.index_select(0, pair_group) - (length.cumsum(0) - length)
        pair = torch.repeat_interleave(
            torch.arange(len(length), device=gt.device), length, output_size=total)
        cand = first.index_select(0, pair) + torch.arange(total, device=gt.device)
        iou_other = paired_iou(
            boxes.index_select(0, cand), gt.index_select(0, pair_gt.index_select(0, pair)))
        t = ious.index_select(0, cand)
        rival_wins_tie = (pair_gt < own_inds.index_select(0, pair_group // J)).index_select(0, pair)
        beaten = (iou_other > t) | ((iou_other == t) & rival_wins_tie)
        return torch.bincount(cand[beaten], minlength=len(group)) == 0

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
        own_inds = torch.arange(K, device=gt.device)  # the GTs that get samples
        if 0 < self.max_gts < K:
            own_inds = torch.randperm(K, device=gt.device)[: self.max_gts].sort().values
        own = gt.index_select(0, own_inds)
        Ko = own.shape[0]
        planes = self._draw_candidates(own, image_size)  # (4, Ko, J, A)
        ious = paired_iou(planes, own.t()[:, :, None, None], dim=0)  # (Ko, J, A), after clipping
        bounds = self.intervals.to(gt.device, gt.dtype)
        valid = (ious > bounds[None, :, 0, None]) & (ious <= bounds[None, :, 1, None])
        flat = valid.view(-1).nonzero().squeeze(1)  # interval-test survivors (about 8%), sorted
        group = flat // A  # own GT position × J + interval index
        # the survivors' boxes (n, 4): one 1-D gather per coordinate plane (fast on CPU)
        boxes = torch.stack([c.index_select(0, flat) for c in planes.view(4, -1)], dim=1)
        ious = ious.view(-1).index_select(0, flat)
        kept = torch.arange(len(flat), device=gt.device)  # positions among the survivors
        if self.argmax_filter and K > 1:
            kept = self._own_gt_is_best(boxes, ious, group, gt, own_inds).nonzero().squeeze(1)
        # the candidates are i.i.d., so the first num_per_interval valid ones (in draw order) of
        # each (GT, interval) are a uniformly random subset of its valid ones
        rank = _rank_in_sorted_groups(group.index_select(0, kept), Ko * J)
        kept = kept[rank < self.num_per_interval]
        flat = flat.index_select(0, kept)
        return IoUUniformSamples(
            boxes=boxes.index_select(0, kept),
            ious=ious.index_select(0, kept),
            gt_inds=own_inds.index_select(0, flat // (J * A)),
            interval_inds=flat // A % J,
        )


def check_samples_exact(generator, gt_boxes, image_size):
    """Check ``generator`` exactly on ``gt_boxes`` ((K, 4) tensor or Boxes) on their device.

    Samples of one call ``generator(gt_boxes, image_size)``: each IoU target equals its IoU with
    its own GT recomputed by :func:`paired_iou`, bit for bit (``ious_exact``), and lies in its
    interval (``ious_in_intervals``); boxes lie inside the image (``inside_image``); at most
    ``num_per_interval`` per (GT, interval) (``caps_hold``), no box twice (``no_duplicates``);
    with the argmax filter and K > 1 its own GT is the argmax of detectron2's ``pairwise_iou``
    over all GTs, ties to the lowest index (``argmax_holds``; None without the filter).
    Candidates of a fresh draw around every GT: on every interval survivor the filter's rival
    test equals that brute-force argmax (``filter_equals_brute_force``; None for K < 2).

    Returns those checks, ``passed`` (all that apply hold), the device, the counts ``num_gts``,
    ``num_samples``, ``num_candidates`` (interval survivors of the fresh draw),
    ``filter_kept_fraction`` (of them) and ``iou_max_abs_error`` (recomputed vs target).
    """
    gt = (gt_boxes.tensor if isinstance(gt_boxes, Boxes) else gt_boxes).float()
    dev, (h, w), J = gt.device, image_size, generator.num_intervals
    bounds = generator.intervals.to(dev)
    s = generator(gt, image_size)
    error = (paired_iou(s.boxes, gt[s.gt_inds]) - s.ious).abs()
    per_group = torch.bincount(s.gt_inds * J + s.interval_inds, minlength=len(gt) * J)
    checks = {
        "ious_exact": bool((error == 0).all()),
        "ious_in_intervals": bool(((s.ious > bounds[s.interval_inds, 0])
                                   & (s.ious <= bounds[s.interval_inds, 1])).all()),
        "inside_image": bool(((s.boxes >= 0).all() & (s.boxes[:, [0, 2]] <= w).all()
                              & (s.boxes[:, [1, 3]] <= h).all())),
        "caps_hold": bool((per_group <= generator.num_per_interval).all()),
        "no_duplicates": len(torch.unique(s.boxes, dim=0)) == len(s),
        "argmax_holds": None,
        "filter_equals_brute_force": None,
    }
    if generator.argmax_filter and len(gt) > 1:
        best = pairwise_iou(Boxes(s.boxes), Boxes(gt)).argmax(dim=1)
        checks["argmax_holds"] = bool((best == s.gt_inds).all())
    num_candidates, kept = 0, None
    if len(gt) > 1:
        planes = generator._draw_candidates(gt, image_size)  # (4, K, J, A)
        boxes = planes.view(4, -1).t()
        group = torch.arange(planes[0].numel(), device=dev) // generator.num_attempts
        own = group // J
        ious = paired_iou(boxes, gt[own])
        m = (ious > bounds[group % J, 0]) & (ious <= bounds[group % J, 1])
        fast = generator._own_gt_is_best(boxes[m], ious[m], group[m], gt)
        brute = pairwise_iou(Boxes(boxes[m]), Boxes(gt)).argmax(dim=1) == own[m]
        checks["filter_equals_brute_force"] = bool(torch.equal(fast, brute))
        num_candidates, kept = int(m.sum()), fast.float().mean().item()
    return {
        "device": str(dev), "num_gts": len(gt), "num_samples": len(s),
        "num_candidates": num_candidates, "filter_kept_fraction": kept,
        "iou_max_abs_error": error.max().item() if len(s) else 0.0, **checks,
        "passed": all(v for v in checks.values() if v is not None),
    }
