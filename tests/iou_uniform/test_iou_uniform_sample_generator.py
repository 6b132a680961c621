"""IoU-uniform sample generator (paper Eq. 1, §3.1; tables, attempts and caps of the authors'
code, see docs/iou_uniform.md)."""
import pytest
import torch

import iou_uniform.sample_generator as sg
from train_net import add_all_configs
from detectron2.config import get_cfg
from detectron2.structures import Boxes, pairwise_iou
from iou_uniform import IoUUniformSampleGenerator, check_samples_exact

INTERVALS = [(0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 1.0)]


def default_generator(**overrides):
    cfg = add_all_configs(get_cfg())
    for k, v in overrides.items():
        cfg.MODEL.IOU_UNIFORM[k] = v
    return IoUUniformSampleGenerator(cfg)


def isolated_gts(rows, cols, spacing=200.0):
    """GTs of varied size and aspect ratio whose jittered candidates never reach a neighbour."""
    g = torch.Generator().manual_seed(1)
    ctr = torch.stack(torch.meshgrid(torch.arange(cols), torch.arange(rows), indexing="xy"), -1)
    ctr = ctr.reshape(-1, 2).float() * spacing + spacing / 2
    wh = 10 + torch.rand(len(ctr), 2, generator=g) * 30  # at most 40 px: candidates < 2x
    return torch.cat([ctr - wh / 2, ctr + wh / 2], 1), (rows * spacing, cols * spacing)


def counts_per_gt_interval(s, num_gts, num_intervals=4):
    c = torch.zeros(num_gts, num_intervals)
    c.index_put_((s.gt_inds, s.interval_inds), torch.ones(len(s)), accumulate=True)
    return c


def assert_invariants(s, gt, image_size, argmax=True):
    """Membership, own-GT argmax, caps, fields consistent, inside the image."""
    lo = torch.tensor([i[0] for i in INTERVALS])[s.interval_inds]
    hi = torch.tensor([i[1] for i in INTERVALS])[s.interval_inds]
    assert ((s.ious > lo) & (s.ious <= hi)).all()
    assert ((s.ious > 0.5) & (s.ious <= 1.0)).all()
    own = sg.paired_iou(s.boxes, gt[s.gt_inds])
    assert torch.allclose(own, s.ious)
    if argmax and len(gt) > 1:
        assert (pairwise_iou(Boxes(s.boxes), Boxes(gt)).argmax(1) == s.gt_inds).all()
    c = counts_per_gt_interval(s, len(gt))
    assert c.max() <= 16 and c.sum(1).max() <= 64
    h, w = image_size
    assert (s.boxes >= 0).all() and (s.boxes[:, [0, 2]] <= w).all()
    assert (s.boxes[:, [1, 3]] <= h).all()
    # no GT box is added as a sample, and no sample is duplicated
    assert len(torch.unique(s.boxes, dim=0)) == len(s)


def test_isolated_gts_yield_and_shares():
    """Over 1,000 isolated GTs: yield and interval shares. Isolated, so the argmax
    filter (tested on crowded GTs below) cannot act and is off to keep the test fast."""
    torch.manual_seed(0)
    gt, size = isolated_gts(25, 40)
    s = default_generator(ARGMAX_FILTER=False, MAX_GTS_PER_IMAGE=0)(gt, size)
    assert_invariants(s, gt, size, argmax=False)
    c = counts_per_gt_interval(s, len(gt))  # (1000, 4)
    assert abs(c[:, 0].mean().item() - 14.5) <= 0.3
    full = (c == 16).float().mean(0)
    assert full[1] >= 0.92 and full[2] >= 0.995 and full[3] == 1.0
    shares = c.sum(0) / c.sum()
    assert ((shares > 0.225) & (shares < 0.265)).all(), shares
    assert ((shares - 0.25).abs() <= 0.03).all()  # the 25% ± 3%
    assert (c[:, 0] < 16).any(), "(0.5, 0.6] falls short in about 45% of draws"


def test_identical_gts_tie_goes_to_lowest_index():
    torch.manual_seed(0)
    gt = torch.tensor([[20.0, 30.0, 60.0, 90.0]] * 2)
    s = default_generator()(gt, (128, 128))
    assert len(s) > 48 and (s.gt_inds == 0).all()
    s = default_generator(ARGMAX_FILTER=False)(gt, (128, 128))
    assert (s.gt_inds == 1).any()


def test_crowded_100_gts_batched_without_loop(monkeypatch):
    """Crowding: 100 random, heavily overlapping GTs; every IoU is one batched call (the same
    three calls for any number of GTs: candidates vs own GT, GT vs GT, candidates vs rivals)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(100, 2, generator=g) * 150
    gt = torch.cat([xy, xy + 8 + torch.rand(100, 2, generator=g) * 60], 1)
    calls = []
    real = sg.paired_iou
    monkeypatch.setattr(sg, "paired_iou", lambda *a, **k: calls.append(1) or real(*a, **k))
    s = default_generator()(gt, (200, 220))
    assert len(calls) == 3
    assert_invariants(s, gt, (200, 220))
    assert len(torch.unique(s.gt_inds)) > 50
    # crowding removes samples that another GT matches better
    s_no_filter = default_generator(ARGMAX_FILTER=False)(gt, (200, 220))
    assert len(s_no_filter) > len(s)


def crowded_gts_with_duplicates(device="cpu"):
    g = torch.Generator().manual_seed(4)
    xy = torch.rand(60, 2, generator=g) * 150
    gt = torch.cat([xy, xy + 8 + torch.rand(60, 2, generator=g) * 60], 1)
    return torch.cat([gt, gt[:5]]).to(device)  # exact duplicates: ties go to the lowest index


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                         reason="needs CUDA"))])
def test_argmax_filter_equals_brute_force_over_all_gts(device):
    """The filter only compares a candidate with GTs that overlap its own (Jaccard distance is a
    metric); on crowded GTs it must agree exactly with the argmax over all GTs, and the samples'
    IoU targets must equal their recomputed IoUs bit for bit (``check_samples_exact``, which
    tools/gpu_smoke.py runs on the GPU)."""
    torch.manual_seed(0)
    r = check_samples_exact(default_generator(), crowded_gts_with_duplicates(device), (300, 300))
    assert r["device"].startswith(device) and r["passed"], r
    assert r["filter_equals_brute_force"] and r["argmax_holds"] and r["ious_exact"]
    assert r["num_candidates"] > 10000 and 0.5 < r["filter_kept_fraction"] < 1.0
    assert r["num_samples"] > 1000 and r["iou_max_abs_error"] == 0.0


def test_exactness_check_finds_a_wrong_filter(monkeypatch):
    """``check_samples_exact`` fails a filter that keeps every candidate, and wrong targets."""
    gen, gt = default_generator(), crowded_gts_with_duplicates()
    monkeypatch.setattr(gen, "_own_gt_is_best", lambda boxes, *a: torch.ones(
        len(boxes), dtype=torch.bool))
    r = check_samples_exact(gen, gt, (300, 300))
    assert not r["passed"] and not r["filter_equals_brute_force"] and not r["argmax_holds"]
    assert r["ious_exact"] and r["caps_hold"]
    monkeypatch.undo()
    real = gen.__call__

    def shifted(*args):
        s = real(*args)
        s.ious[0] += 1e-6
        return s

    monkeypatch.setattr(sg.IoUUniformSampleGenerator, "__call__", lambda self, *a: shifted(*a))
    r = check_samples_exact(gen, gt, (300, 300))
    assert not r["passed"] and not r["ious_exact"] and r["filter_equals_brute_force"]
    assert r["iou_max_abs_error"] > 0


def test_no_gt_and_degenerate_gt():
    """K = 0 gives empty outputs of the right shapes; a zero-area GT gives nothing."""
    gen = default_generator()
    s = gen(torch.zeros(0, 4), (100, 100))
    assert s.boxes.shape == (0, 4) and s.ious.shape == (0,) and len(s) == 0
    assert s.gt_inds.dtype == torch.int64 and s.interval_inds.shape == (0,)
    gt = torch.tensor([[10.0, 10.0, 10.0, 50.0], [10.0, 10.0, 40.0, 10.0], [50, 50, 80, 90]])
    s = gen(gt, (100, 100))
    assert len(s) > 0 and (s.gt_inds == 2).all()


def test_border_gt_clipped_targets_after_clipping():
    """Samples of a GT at the border lie inside the image; t is computed after clipping."""
    torch.manual_seed(0)
    gt = torch.tensor([[0.0, 0.0, 40.0, 30.0], [70.0, 60.0, 100.0, 80.0]])
    s = default_generator()(gt, (80, 100))
    assert_invariants(s, gt, (80, 100))
    assert (s.boxes[:, :2] == 0).any() and (s.boxes[:, 2] == 100).any()


def crowded_gts(num, seed=3):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=g) * 150
    return torch.cat([xy, xy + 8 + torch.rand(num, 2, generator=g) * 60], 1)


def test_gt_cap_samples_at_most_max_gts_random_gts():
    """MAX_GTS_PER_IMAGE (default 300): 1,000 GTs yield samples around 300 of them, drawn by
    torch's generator; the argmax filter still compares with every GT."""
    gt, size = isolated_gts(25, 40)
    gen = default_generator(ARGMAX_FILTER=False)
    torch.manual_seed(0)
    s = gen(gt, size)
    assert gen.max_gts == 300 and len(torch.unique(s.gt_inds)) == 300
    assert_invariants(s, gt, size, argmax=False)
    torch.manual_seed(0)
    assert torch.equal(gen(gt, size).gt_inds, s.gt_inds)
    assert not torch.equal(gen(gt, size).gt_inds.unique(), s.gt_inds.unique())
    gt = crowded_gts(100)
    torch.manual_seed(0)
    s = default_generator(MAX_GTS_PER_IMAGE=30)(gt, (200, 220))
    assert 25 <= len(torch.unique(s.gt_inds)) <= 30
    assert_invariants(s, gt, (200, 220))  # own GT is the argmax over all 100 GTs
    with pytest.raises(ValueError, match="max_gts"):
        default_generator(MAX_GTS_PER_IMAGE=-1)


@pytest.mark.parametrize("argmax", [True, False])
def test_gt_cap_leaves_images_under_it_unchanged(argmax):
    """An image with at most MAX_GTS_PER_IMAGE GTs gets bit-identical samples, and the cap
    draws no random numbers for it."""
    gt = crowded_gts(100)
    out = []
    for cap in (0, 100, 300):
        torch.manual_seed(0)
        out.append((default_generator(ARGMAX_FILTER=argmax, MAX_GTS_PER_IMAGE=cap)(gt, (200, 220)),
                    torch.rand(1)))
    (ref, ref_next), others = out[0], out[1:]
    for s, next_draw in others:
        for field in ("boxes", "ious", "gt_inds", "interval_inds"):
            assert torch.equal(getattr(s, field), getattr(ref, field)), field
        assert torch.equal(next_draw, ref_next)


def test_seeded_runs_reproduce():
    gt, size = isolated_gts(2, 2)
    gen = default_generator()
    torch.manual_seed(5)
    a = gen(gt, size)
    torch.manual_seed(5)
    b = gen(Boxes(gt), size)
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.gt_inds, b.gt_inds)
    c = gen(gt, size)  # the global generator moved on: new draws
    assert not (len(c) == len(a) and torch.equal(c.boxes, a.boxes))


def test_random_int16_is_uniform_in_every_lane():
    """The four 16-bit lanes of each random word are uniform on [-1, 1) after scaling."""
    torch.manual_seed(0)
    z = sg._random_int16(4, 250000, device="cpu")
    assert z.dtype == torch.int16 and z.shape == (4, 250000)
    u = z.float() * sg.INT16_UNIT
    assert u.min() >= -1 and u.max() < 1
    for lane in z.view(-1, 4).t().float() * sg.INT16_UNIT:  # bytes 0-1, 2-3, 4-5, 6-7 of a word
        assert abs(lane.mean().item()) < 0.01 and abs(lane.var().item() - 1 / 3) < 0.01
        hist = torch.histc(lane, bins=16, min=-1, max=1) / len(lane)
        assert (hist - 1 / 16).abs().max() < 0.005


def test_custom_table_and_bad_config():
    torch.manual_seed(0)
    gen = IoUUniformSampleGenerator(intervals=[(0.9, 1.0)], center_offsets=[0.125],
                                    scale_ranges=[(0.9, 1.25)], num_per_interval=20,
                                    num_attempts=500, argmax_filter=False)
    gt, size = isolated_gts(3, 3)
    s = gen(gt, size)
    assert (s.ious > 0.9).all() and (s.interval_inds == 0).all()
    assert counts_per_gt_interval(s, 9, 1).max() <= 20
    with pytest.raises(ValueError, match="centre offsets"):
        default_generator(CENTER_OFFSETS=[0.75, 0.5])
    with pytest.raises(ValueError, match="increase"):
        sg.intervals_from_boundaries([0.5, 0.7, 0.6])
    with pytest.raises(ValueError, match=r"\(K, 4\)"):
        default_generator()(torch.zeros(3, 5), (10, 10))
