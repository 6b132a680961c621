"""IoUUniformROIHeads on hand-built tensors: sample routing, gradient isolation, Eq. 2 weights,
EFO and score modes (paper §3.1-3.2, Eq. 2, Fig. 5)."""
import pytest
import torch

from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage
from iou_uniform import IoUUniformROIHeads, IoUUniformSamples
from iou_uniform.inference import iou_uniform_inference, iou_uniform_inference_single_image
from iou_uniform.roi_heads import refine_boxes
from iou_uniform.sample_generator import paired_iou
from tests.iou_uniform.roi_heads_utils import (
    IMAGE_SIZE, Recorder, build_heads, features, proposals, targets,
)


def train_forward(heads, gts, props=None, feats=None):
    heads.train()
    with EventStorage():
        return heads(None, feats or features(), props or proposals(gts), gts)


def grads_of(module):
    return [p.grad for p in module.parameters()]


def test_built_from_config_and_towers_are_submodules():
    heads = build_heads()
    assert isinstance(heads, IoUUniformROIHeads)
    names = dict(heads.named_children())
    assert {"box_head", "box_predictor", "reg_iou_head"} <= set(names)
    assert heads.reg_iou_head.bbox_pred.out_features == 4  # class-agnostic
    assert heads.reg_iou_head.iou_pred.out_features == 1
    assert heads.box_predictor.out_features == 4  # C + 1 logits, no box output
    assert heads.reg_iou_head.trunk is not heads.box_head


def test_each_tower_trains_on_its_own_samples_and_gradients_are_isolated():
    """The cls tower sees the sampled RPN RoIs only, the reg + IoU tower the generated samples
    only; neither gets a gradient from the other's loss."""
    heads = build_heads()
    gen = heads.sample_generator = Recorder(heads.sample_generator)
    heads.classify, heads.regress = Recorder(heads.classify), Recorder(heads.regress)
    gts = targets()
    sampled, losses = train_forward(heads, gts)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_iou"}
    ((_, cls_boxes), _), = heads.classify.calls
    assert [b.tensor.tolist() for b in cls_boxes] == [p.proposal_boxes.tensor.tolist()
                                                      for p in sampled]
    ((_, reg_boxes), _), = heads.regress.calls
    generated = [res for _, res in gen.calls]
    assert len(generated) == 2 and all(len(s) > 0 for s in generated)
    for b, s in zip(reg_boxes, generated):
        assert torch.equal(b.tensor, s.boxes)
    heads.zero_grad()
    losses["loss_cls"].backward(retain_graph=True)
    assert all(g is None for g in grads_of(heads.reg_iou_head))
    assert all(g is not None for g in grads_of(heads.box_head) + grads_of(heads.box_predictor))
    heads.zero_grad(set_to_none=True)
    (losses["loss_box_reg"] + losses["loss_iou"]).backward()
    assert all(g is None for g in grads_of(heads.box_head) + grads_of(heads.box_predictor))
    assert all(g is not None and g.abs().sum() > 0 for g in grads_of(heads.reg_iou_head))


def test_rpn_samples_option_uses_positive_sampled_rois():
    """GENERATED_SAMPLES False (Table 6): the reg + IoU tower sees the positive RPN RoIs."""
    heads = build_heads(GENERATED_SAMPLES=False)
    heads.regress = Recorder(heads.regress)
    gts = targets()
    sampled, _ = train_forward(heads, gts)
    ((_, reg_boxes), _), = heads.regress.calls
    for b, p in zip(reg_boxes, sampled):
        fg = p[p.gt_classes < 3]
        assert len(fg) > 0 and torch.equal(b.tensor, fg.proposal_boxes.tensor)
        assert (paired_iou(fg.proposal_boxes.tensor, fg.gt_boxes.tensor) >= 0.5).all()


class FixedSamples:
    """A generator stand-in returning fixed samples around GT 0 with the given IoU targets."""

    def __init__(self, ious):
        self.ious = torch.tensor(ious)

    def __call__(self, gt_boxes, image_size):
        n = len(self.ious)
        boxes = gt_boxes.tensor[:1].repeat(n, 1) + torch.arange(n, dtype=torch.float)[:, None]
        zeros = torch.zeros(n, dtype=torch.int64)
        return IoUUniformSamples(boxes, self.ious, zeros, zeros)


@pytest.mark.parametrize("weights", [(1.0, 1.5, 3.0, 3.0), (1.0, 1.0, 1.0, 1.0)])
def test_interval_weights_applied_to_regression_loss(weights):
    """Eq. 2 in the heads: L_reg = Σ w(t) smoothL1 / 4N with w from the targets t; L_iou."""
    heads = build_heads(REG_INTERVAL_WEIGHTS=list(weights))
    ious = [0.55, 0.65, 0.75, 0.95]
    heads.sample_generator = FixedSamples(ious)
    gts, feats = targets(), features()
    _, losses = train_forward(heads, gts, feats=feats)
    boxes = [Boxes(FixedSamples(ious)(t.gt_boxes, None).boxes) for t in gts]
    f = [feats[k] for k in heads.box_in_features]
    with torch.no_grad():
        deltas, u = heads.regress(f, boxes)
    gt = torch.cat([t.gt_boxes.tensor[:1].repeat(4, 1) for t in gts])
    target = heads.box2box_transform.get_deltas(torch.cat([b.tensor for b in boxes]), gt)
    w = torch.tensor([weights[0], weights[1], weights[2], weights[3]] * 2)
    diff = (deltas - target).abs()
    sl1 = torch.where(diff < 1.0, 0.5 * diff ** 2, diff - 0.5)
    assert torch.allclose(losses["loss_box_reg"], (sl1 * w[:, None]).sum() / (4 * 8))
    d = (u - torch.tensor(ious * 2)).abs()
    expected_iou = torch.where(d < 0.5, 0.5 * d ** 2 / 0.5, d - 0.25).mean()  # beta 0.5
    assert torch.allclose(losses["loss_iou"], expected_iou)


@pytest.mark.parametrize("generated", [True, False])
def test_no_gt_gives_connected_zero_losses(generated):
    """Images without GT give no samples, zero reg/IoU losses and a working backward."""
    heads = build_heads(GENERATED_SAMPLES=generated)
    gts = targets((0, 0))
    _, losses = train_forward(heads, gts)
    assert losses["loss_box_reg"].item() == 0 and losses["loss_iou"].item() == 0
    assert torch.isfinite(losses["loss_cls"])
    sum(losses.values()).backward()
    assert all(g is not None for g in grads_of(heads.reg_iou_head))


def eval_forward(heads, feats, props):
    heads.eval()
    heads.box_pooler.forward = Recorder(heads.box_pooler.forward)
    for name in ("cls_logits", "reg_iou_outputs"):
        setattr(heads, name, Recorder(getattr(heads, name)))
    with torch.no_grad():
        out, _ = heads(None, feats, props)
    return out


def refined_rois(heads, deltas, props):
    refined = heads.box2box_transform.apply_deltas(deltas, torch.cat(
        [p.proposal_boxes.tensor for p in props]))
    refined = Boxes(refined)
    refined.clip(IMAGE_SIZE)
    return refined


@pytest.mark.parametrize("efo", [True, False])
def test_efo_pools_at_refined_boxes_and_scores_are_p_times_u(efo):
    """EFO (paper §3.2) and the score rule (Fig. 5) in the heads: both towers share one pooling
    at the proposals; EFO pools again at the clipped decoded boxes (the tower runs twice, its
    second deltas unused); off: once, scores use u1. Score = p_c × u."""
    heads = build_heads(EFO=efo)
    heads.test_score_thresh = 0.0
    feats, props = features(), proposals(targets())
    out = eval_forward(heads, feats, props)
    pooled = heads.box_pooler.forward.calls
    assert len(pooled) == len(heads.reg_iou_outputs.calls) == (2 if efo else 1)
    assert [torch.equal(b.tensor, p.proposal_boxes.tensor)
            for b, p in zip(pooled[0][0][1], props)] == [True, True]
    (_, (deltas, u1)) = heads.reg_iou_outputs.calls[0]
    refined = refined_rois(heads, deltas, props)
    if efo:
        assert torch.equal(torch.cat([b.tensor for b in pooled[1][0][1]]), refined.tensor)
        (_, (_, u)) = heads.reg_iou_outputs.calls[1]
    else:
        u = u1
    ((_, logits),) = heads.cls_logits.calls
    probs = logits.softmax(-1)
    offset = 0
    for det, p in zip(out, props):
        assert len(det) > 0
        r = slice(offset, offset + len(p))
        offset += len(p)
        # each detection box is one refined RoI; find it and check the score
        match = (det.pred_boxes.tensor[:, None, :] == refined.tensor[r][None]).all(-1)
        idx = match.float().argmax(1)
        assert match.any(1).all()
        expected = probs[r][idx, det.pred_classes] * u[r][idx]
        assert torch.allclose(det.scores, expected)
        assert torch.equal(det.pred_ious, u[r][idx])


def test_only_rois_above_the_score_threshold_are_regressed_and_pooled_again():
    """Only RoIs with a foreground p_c above the threshold can become detections, so only they
    go through the regression + IoU tower and are pooled again; the detections equal those of
    regression and EFO over every RoI."""
    heads = build_heads()
    heads.eval()
    feats, props = features(), proposals(targets())
    boxes = [p.proposal_boxes for p in props]
    f = [feats[k] for k in heads.box_in_features]
    with torch.no_grad():
        x = heads.box_pooler(f, boxes)
        probs = heads.cls_logits(x).softmax(-1)
        deltas, _ = heads.reg_iou_outputs(x)
        refined = refine_boxes(heads.box2box_transform, boxes, deltas, [IMAGE_SIZE] * 2)
        _, u_all = heads.reg_iou_outputs(heads.box_pooler(f, refined))
    best_fg = probs[:, :-1].max(dim=1).values
    heads.test_score_thresh = float(best_fg.median())  # about half the RoIs are candidates
    candidate = best_fg > heads.test_score_thresh
    assert 0 < candidate.sum() < len(candidate)
    out = eval_forward(heads, feats, props)
    ((first_pass,), _) = heads.reg_iou_outputs.calls[0]
    assert torch.equal(first_pass, x[candidate])
    repooled = torch.cat([b.tensor for b in heads.box_pooler.forward.calls[1][0][1]])
    assert torch.equal(repooled, torch.cat([b.tensor for b in refined])[candidate])
    num = [len(b) for b in boxes]
    expected = iou_uniform_inference(
        [b.tensor for b in refined], probs.split(num), u_all.split(num), [IMAGE_SIZE] * 2,
        "cls_x_iou", heads.test_score_thresh, heads.test_nms_thresh, heads.test_topk_per_image)
    for det, ref in zip(out, expected):
        assert len(det) > 0
        assert torch.equal(det.pred_boxes.tensor, ref.pred_boxes.tensor)
        torch.testing.assert_close(det.scores, ref.scores)


@pytest.mark.parametrize("name", ["IoUUniformROIHeads", "IoUUniformCascadeROIHeads"])
def test_no_roi_above_the_score_threshold_gives_empty_detections(name):
    heads = build_heads(name)
    heads.eval()
    heads.test_score_thresh = 1.0  # no probability exceeds it
    with torch.no_grad():
        out, _ = heads(None, features(), proposals(targets()))
    assert [len(det) for det in out] == [0, 0]
    assert all(det.has("pred_ious") and det.pred_boxes.tensor.shape == (0, 4) for det in out)


def test_cls_score_mode_scores_are_probabilities():
    heads = build_heads(SCORE_MODE="cls")
    feats, props = features(), proposals(targets())
    out = eval_forward(heads, feats, props)
    ((_, logits),) = heads.cls_logits.calls
    probs = logits.softmax(-1)[: len(props[0])]
    det = out[0]
    assert len(det) > 0 and ((det.scores > 0.05) & (det.scores <= probs.max())).all()
    assert all((probs[:, c] == s).any() for s, c in zip(det.scores, det.pred_classes))


def test_score_rule_thresholds_p_then_multiplies():
    """Score rule (Fig. 5): p = 0.06, u = 0.6 kept with score 0.036; p = 0.04, u = 1.0 dropped."""
    boxes = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
    probs = torch.tensor([[0.06, 0.0, 0.94], [0.04, 0.0, 0.96]])
    ious = torch.tensor([0.6, 1.0])
    det = iou_uniform_inference_single_image(boxes, probs, ious, (100, 100), "cls_x_iou",
                                             0.05, 0.5, 100)
    assert len(det) == 1 and det.pred_classes.tolist() == [0]
    assert det.scores.item() == (torch.tensor(0.06) * torch.tensor(0.6)).item()
    assert abs(det.scores.item() - 0.036) < 1e-7
    det = iou_uniform_inference_single_image(boxes, probs, ious, (100, 100), "cls",
                                             0.05, 0.5, 100)
    assert det.scores.tolist() == [probs[0, 0].item()]
    with pytest.raises(ValueError, match="score mode"):
        iou_uniform_inference_single_image(boxes, probs, ious, (100, 100), "iou", 0.05, 0.5, 1)


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="SCORE_MODE"):
        build_heads(SCORE_MODE="product")
    with pytest.raises(ValueError, match="REG_INTERVAL_WEIGHTS"):
        build_heads(REG_INTERVAL_WEIGHTS=[1.0, 2.0])
    with pytest.raises(ValueError, match="INIT"):
        build_heads(INIT="xavier")
