"""IoUUniformCascadeROIHeads: stage generators, losses counted once, test-time flow (paper §4.2;
the authors' CascadeRCNN_IoU without its double-counted stage-3 losses)."""
import pytest
import torch

from detectron2.utils.events import EventStorage
from iou_uniform import IoUUniformCascadeROIHeads
from tests.iou_uniform.roi_heads_utils import Recorder, build_heads, features, proposals, targets

CASCADE = "IoUUniformCascadeROIHeads"


def test_stage_generators_and_coders_as_in_authors_code():
    """G1-G3, box coders and IoU thresholds of the authors' CascadeRCNN_IoU."""
    heads = build_heads(CASCADE)
    assert isinstance(heads, IoUUniformCascadeROIHeads) and heads.num_cascade_stages == 3
    g1, g2, g3 = heads.sample_generators
    def same(t, expected):
        return torch.allclose(t, torch.tensor(expected))

    assert same(g1.intervals, [[0.5, 0.6], [0.6, 0.7], [0.7, 0.8], [0.8, 1.0]])
    assert same(g2.intervals, [[0.6, 0.7], [0.7, 0.8], [0.8, 1.0], [0.9, 1.0]])
    assert same(g3.intervals, [[0.7, 0.8], [0.8, 1.0], [0.9, 1.0]])
    assert same(g2.center_offsets, [0.5, 0.3, 0.125, 0.125])
    assert same(g3.scale_ranges, [[0.7, 1.4], [0.8, 1.25], [0.9, 1.25]])
    assert [g.num_per_interval for g in (g1, g2, g3)] == [16, 16, 20]
    assert [g.argmax_filter for g in (g1, g2, g3)] == [True, False, False]
    assert [t.weights for t in heads.box2box_transforms] == [
        (10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)]
    assert [m.thresholds[1] for m in heads.proposal_matchers] == [0.5, 0.6, 0.7]
    assert len(heads.reg_iou_head) == 3 and len(heads.box_predictor) == 3


def test_stage_samples_fall_in_stage_intervals():
    heads = build_heads(CASCADE)
    torch.manual_seed(0)
    gts = targets()
    for g, lo in zip(heads.sample_generators, (0.5, 0.6, 0.7)):
        s = g(gts[0].gt_boxes, gts[0].image_size)
        assert len(s) > 0 and (s.ious > lo).all()
        bounds = g.intervals[s.interval_inds]
        assert ((s.ious > bounds[:, 0]) & (s.ious <= bounds[:, 1])).all()


@pytest.mark.parametrize("resample", [True, False])
def test_losses_counted_once_with_stage_weights(resample):
    """One cls, reg and IoU entry per stage; total = Σ lw_s × stage sum."""
    heads = build_heads(CASCADE, CASCADE_RESAMPLE=resample)
    heads.train()
    unweighted = []
    stage_losses = heads.stage_losses
    heads.stage_losses = lambda *a: unweighted.append(stage_losses(*a)) or unweighted[-1]
    heads.regress = Recorder(heads.regress)
    gts = targets()
    torch.manual_seed(0)
    with EventStorage():
        _, losses = heads(None, features(), proposals(gts), gts)
    assert set(losses) == {f"{k}_stage{s}" for k in ("loss_cls", "loss_box_reg", "loss_iou")
                           for s in range(3)}
    total = sum(losses.values())
    expected = sum(lw * sum(d.values()) for lw, d in zip((1.0, 0.5, 0.25), unweighted))
    assert torch.allclose(total, expected)
    for s, d in enumerate(unweighted):
        for k, v in d.items():
            assert torch.allclose(losses[f"{k}_stage{s}"], (1.0, 0.5, 0.25)[s] * v)
    # stage s > 0 refines stage s-1's RoIs without gradient; no GT-appended box is refined
    refine_calls = [(args, out) for args, out in heads.regress.calls if args[2] < 2
                    and not out[0].requires_grad]
    assert len(refine_calls) == 2
    if resample:
        for (args, _) in refine_calls:
            for b, t in zip(args[1], gts):
                assert not (b.tensor[:, None] == t.gt_boxes.tensor[None]).all(-1).any()
    total.backward()
    for s in range(3):
        assert all(p.grad is not None for p in heads.reg_iou_head[s].parameters())
        assert all(p.grad is not None for p in heads.box_head[s].parameters())


def test_no_gt_and_inference():
    heads = build_heads(CASCADE)
    heads.train()
    gts = targets((0, 0))
    with EventStorage():
        _, losses = heads(None, features(), proposals(targets()), gts)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert tower_stages_at_test(heads) == [0, 1, 2, 2]  # EFO with tower 3
    heads = build_heads(CASCADE, EFO=False, CASCADE_TEST_SCORE="probs")
    assert tower_stages_at_test(heads) == [0, 1, 2]


def tower_stages_at_test(heads):
    """The stages of the regression + IoU towers run by one inference, in order."""
    heads.eval()
    heads.apply_reg_iou_head = Recorder(heads.apply_reg_iou_head)
    with torch.no_grad():
        out, _ = heads(None, features(), proposals(targets()))
    assert len(out) == 2 and out[0].has("pred_ious")
    towers = list(heads.reg_iou_head)
    return [next(i for i, t in enumerate(towers) if t is args[0])
            for args, _ in heads.apply_reg_iou_head.calls]
