"""Loss-level checks of the IoU-balanced losses (Eq. 3-7, 13-14) on hand-built tensors."""
import math

import pytest
import torch
from fvcore.nn import sigmoid_focal_loss_jit, smooth_l1_loss

from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.utils.events import EventStorage
from projects.iou_balanced import (
    IoUBalancedLocWeight,
    iou_balanced_cls_weights,
    iou_balanced_cross_entropy,
    iou_balanced_sigmoid_focal_loss,
    iou_balanced_smooth_l1_loss,
    normalized_w_loc,
    regressed_iou,
)

# paper Table 3: lambda -> w_loc (RetinaNet R50, 600 px)
TABLE3_W_LOC = {0.5: 1.575, 1.0: 2.226, 1.5: 3.049, 1.8: 3.649}
BETA = 0.111  # the paper's delta in Eq. 13-14
RETINA_CODER = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))


def _focal_inputs(seed=0, rows=60, classes=4, levels=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, classes, generator=g)
    labels = torch.randint(classes + 1, (rows,), generator=g)  # == classes: negative
    targets = torch.nn.functional.one_hot(labels, classes + 1)[:, :-1].float()
    iou = torch.rand(rows, generator=g)
    groups = torch.randint(levels, (rows,), generator=g)
    return logits, targets, iou, groups


def _focal_weights(logits, targets, iou, eta, groups=None):
    """The weight matrix W applied by iou_balanced_sigmoid_focal_loss, recovered elementwise."""
    fl = sigmoid_focal_loss_jit(logits, targets, alpha=0.25, gamma=2.0, reduction="none")
    bal = iou_balanced_sigmoid_focal_loss(logits, targets, iou, eta=eta, groups=groups,
                                          reduction="none")
    return fl, bal, bal / fl


@pytest.mark.parametrize("scope", ["batch", "level"])
def test_focal_normaliser_keeps_positive_sum_and_leaves_the_rest(scope):
    """Eq. 4: sum_Pos W*FL == sum_Pos FL (per level too); other entries untouched."""
    logits, targets, iou, groups = _focal_inputs()
    groups = groups if scope == "level" else None
    fl, bal, w = _focal_weights(logits, targets, iou, eta=1.5, groups=groups)
    pos = targets > 0
    assert pos.sum() > 5 and (~pos).sum() > 5
    torch.testing.assert_close(bal[~pos], fl[~pos], rtol=0, atol=0)  # negatives, other classes
    assert not torch.allclose(bal[pos], fl[pos])  # the positives are re-weighted
    rows = pos.nonzero()[:, 0]
    if groups is None:
        torch.testing.assert_close(bal[pos].sum(), fl[pos].sum(), rtol=1e-5, atol=0)
    else:
        for level in range(3):
            sel = groups[rows] == level
            assert sel.any()
            torch.testing.assert_close(bal[pos][sel].sum(), fl[pos][sel].sum(), rtol=1e-5, atol=0)
    # the weights are iou^eta times one normaliser (per group)
    z = w[pos] / iou[rows].pow(1.5)
    keys = groups[rows] if groups is not None else torch.zeros_like(rows)
    for k in keys.unique():
        torch.testing.assert_close(z[keys == k], z[keys == k][:1].expand(int((keys == k).sum())))


def test_focal_weights_are_detached_and_gradient_is_weighted():
    """d(sum W*FL)/dlogit == W * dFL/dlogit; W has requires_grad False."""
    logits, targets, iou, _ = _focal_inputs(seed=1)
    pos = targets > 0
    rows = pos.nonzero()[:, 0]
    fl = sigmoid_focal_loss_jit(logits, targets, alpha=0.25, gamma=2.0, reduction="none")
    w = iou_balanced_cls_weights(fl[pos], iou[rows], eta=1.5)
    assert not w.requires_grad
    W = torch.ones_like(fl)
    W[pos] = w

    x = logits.clone().requires_grad_(True)
    iou_balanced_sigmoid_focal_loss(x, targets, iou, eta=1.5).backward()
    y = logits.clone().requires_grad_(True)
    plain = sigmoid_focal_loss_jit(y, targets, alpha=0.25, gamma=2.0, reduction="none")
    (dfl,) = torch.autograd.grad(plain, y, grad_outputs=torch.ones_like(plain))
    torch.testing.assert_close(x.grad, W * dfl, rtol=1e-5, atol=1e-7)


def test_cross_entropy_normaliser_and_negatives():
    """Eq. 3-4 on softmax CE: positives' sum unchanged, negatives (label C) untouched, mean."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(40, 6, generator=g)
    labels = torch.randint(6, (40,), generator=g)  # 5 = background
    iou = torch.rand(40, generator=g)
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    bal = iou_balanced_cross_entropy(logits, labels, iou, eta=1.3, reduction="none")
    pos = labels < 5
    torch.testing.assert_close(bal[~pos], ce[~pos], rtol=0, atol=0)
    torch.testing.assert_close(bal[pos].sum(), ce[pos].sum(), rtol=1e-5, atol=0)
    ratio = bal[pos] / ce[pos] / iou[pos].pow(1.3)  # one normaliser Z for all positives
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio), rtol=1e-5, atol=0)
    torch.testing.assert_close(iou_balanced_cross_entropy(logits, labels, iou, eta=1.3),
                               bal.mean())
    # eta = 0 is detectron2's plain mean cross-entropy
    torch.testing.assert_close(iou_balanced_cross_entropy(logits, labels, iou, eta=0.0),
                               torch.nn.functional.cross_entropy(logits, labels), rtol=1e-6,
                               atol=0)
    with pytest.raises(ValueError, match="reduction"):
        iou_balanced_cross_entropy(logits, labels, iou, eta=1.3, reduction="avg")


def test_loc_gradient_is_weight_times_smooth_l1_gradient_eq8():
    """Eq. 8: d(w sL1)/dl == w d/beta inside the knee, w sign(d) outside; w detached."""
    g = torch.Generator().manual_seed(3)
    pred = (torch.randn(50, 4, generator=g) * 0.3).requires_grad_(True)
    target = torch.randn(50, 4, generator=g) * 0.3
    # an IoU that *depends on pred*: a gradient through the weight would change the result
    iou = torch.sigmoid(pred.sum(dim=1))
    beta, lam, w_loc = 0.11, 1.5, 3.049
    iou_balanced_smooth_l1_loss(pred, target, iou, lam=lam, beta=beta, w_loc=w_loc).backward()
    d = (pred - target).detach()
    w = (w_loc * iou.detach().pow(lam))[:, None]
    expected = torch.where(d.abs() < beta, w * d / beta, w * d.sign())
    assert (d.abs() < beta).any() and (d.abs() > beta).any()
    torch.testing.assert_close(pred.grad, expected, rtol=1e-5, atol=1e-7)


def test_perturbing_iou_changes_loss_not_gradient_form():
    """the IoU only scales the loss; no gradient reaches it."""
    pred = torch.tensor([[0.3, -0.2, 0.05, 0.5]], requires_grad=True)
    target = torch.zeros(1, 4)
    iou = torch.tensor([0.6], requires_grad=True)
    loss_a = iou_balanced_smooth_l1_loss(pred, target, iou, lam=1.5, beta=0.11)
    loss_b = iou_balanced_smooth_l1_loss(pred, target, iou.detach() + 0.2, lam=1.5, beta=0.11)
    assert not torch.isclose(loss_a, loss_b)
    loss_a.backward()
    assert iou.grad is None


def _single_delta_geometry(kind, d):
    """Anchor == GT box (so w_t == w_s), one non-zero delta: dx (centre) or dw (width)."""
    box = torch.tensor([[10.0, 20.0, 50.0, 60.0]])
    deltas = torch.zeros(1, 4)
    deltas[0, 0 if kind == "centre" else 2] = d
    return box, deltas


def _exact_iou(kind, d):
    return (1 - abs(d)) / (1 + abs(d)) if kind == "centre" else math.exp(-abs(d))


D_GRID = [-0.9, -0.5, -0.3554 - 0.01, -0.2, -0.12, -0.1, -0.05, -0.01, 0.02, 0.08, 0.11,
          0.112, 0.2, 0.36, 0.5, 0.7, 0.75, 0.9]


@pytest.mark.parametrize("kind", ["centre", "width"])
@pytest.mark.parametrize("lam", sorted(TABLE3_W_LOC))
def test_eq13_eq14_closed_form_gradient(kind, lam):
    """with the regressed IoU, autograd equals Eq. 13 (centre) / Eq. 14 (width)."""
    w_loc = TABLE3_W_LOC[lam]
    for d in D_GRID:
        anchor, deltas = _single_delta_geometry(kind, d)
        pred = deltas.clone().requires_grad_(True)
        iou = regressed_iou(RETINA_CODER, pred, anchor, anchor)
        torch.testing.assert_close(iou, torch.tensor([_exact_iou(kind, d)]), rtol=1e-5, atol=1e-6)
        gt_deltas = RETINA_CODER.get_deltas(anchor, anchor)
        iou_balanced_smooth_l1_loss(pred, gt_deltas, iou, lam=lam, beta=BETA,
                                    w_loc=w_loc).backward()
        j = 0 if kind == "centre" else 2
        knee = d / BETA if abs(d) <= BETA else math.copysign(1.0, d)
        expected = w_loc * _exact_iou(kind, d) ** lam * knee
        torch.testing.assert_close(pred.grad[0, j], torch.tensor(expected), rtol=1e-5, atol=1e-7)
        others = [k for k in range(4) if k != j]
        assert torch.all(pred.grad[0, others] == 0)


@pytest.mark.parametrize("kind,bound", [("centre", 0.3554), ("width", 0.7432)])
def test_crossover_with_paper_constants(kind, bound):
    """lambda 1.5, w_loc 3.049: balanced gradient > plain iff iou > 0.4756."""
    for d in [x / 100 for x in range(-90, 91, 3)]:
        if abs(abs(d) - bound) < 0.005:
            continue
        anchor, deltas = _single_delta_geometry(kind, d)
        grads = []
        for lam, w_loc in ((1.5, 3.049), (0.0, 1.0)):
            pred = deltas.clone().requires_grad_(True)
            iou = regressed_iou(RETINA_CODER, pred, anchor, anchor)
            iou_balanced_smooth_l1_loss(pred, torch.zeros(1, 4), iou, lam=lam, beta=BETA,
                                        w_loc=w_loc).backward()
            grads.append(pred.grad.abs().sum().item())
        if d != 0:
            assert (grads[0] > grads[1]) == (abs(d) < bound), (d, grads)
            assert (grads[0] > grads[1]) == (_exact_iou(kind, d) > 0.4756)


def _loc_batch(seed, n=30):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, 4, generator=g) * 0.4
    target = torch.randn(n, 4, generator=g) * 0.4
    return pred, target, torch.rand(n, generator=g) * 0.9 + 0.05


def test_calibrate_equalises_first_sum_then_freezes_and_round_trips():
    """first iteration with positives: sum w iou^lam sL1 == sum sL1; then frozen."""
    weight = IoUBalancedLocWeight("calibrate", lam=1.5).train()
    with EventStorage() as storage:
        empty = torch.zeros(0, 4)
        loss0 = iou_balanced_smooth_l1_loss(empty, empty, torch.zeros(0), lam=1.5, beta=0.11,
                                            w_loc=weight)
        assert loss0 == 0 and not weight.calibrated  # a zero-positive iteration defers
        pred, target, iou = _loc_batch(4)
        balanced = iou_balanced_smooth_l1_loss(pred, target, iou, lam=1.5, beta=0.11,
                                               w_loc=weight)
        plain = smooth_l1_loss(pred, target, 0.11, reduction="sum")
        torch.testing.assert_close(balanced, plain, rtol=1e-5, atol=0)
        assert bool(weight.calibrated)
        frozen = float(weight.w_loc)
        assert frozen > 1  # IoUs below 1 need w_loc > 1 to keep the sum

        pred2, target2, iou2 = _loc_batch(5)
        balanced2 = iou_balanced_smooth_l1_loss(pred2, target2, iou2, lam=1.5, beta=0.11,
                                                w_loc=weight)
        assert float(weight.w_loc) == frozen
        expected2 = (frozen * iou2.pow(1.5)[:, None]
                     * smooth_l1_loss(pred2, target2, 0.11, reduction="none")).sum()
        torch.testing.assert_close(balanced2, expected2, rtol=1e-5, atol=0)
        assert storage.history("iou_balanced/w_loc").values()[-1][0] == pytest.approx(frozen)

    restored = IoUBalancedLocWeight("calibrate", lam=1.5).train()
    restored.load_state_dict(weight.state_dict())
    assert bool(restored.calibrated) and float(restored.w_loc) == frozen
    with EventStorage():
        restored(smooth_l1_loss(pred2, target2, 0.11, reduction="none").sum(1), iou2 * 0.5)
    assert float(restored.w_loc) == frozen  # no recalibration after loading


def test_calibrate_never_in_eval_and_fixed_mode_has_no_state():
    weight = IoUBalancedLocWeight("calibrate", lam=1.5).eval()
    pred, target, iou = _loc_batch(6)
    weight(smooth_l1_loss(pred, target, 0.11, reduction="none").sum(1), iou)
    assert not weight.calibrated and float(weight.w_loc) == 1.0
    fixed = IoUBalancedLocWeight("fixed", w_loc=2.4, lam=1.5)
    assert fixed.state_dict() == {}  # a fixed constant comes from the config, not a checkpoint
    assert float(fixed(torch.ones(3), torch.ones(3))) == pytest.approx(2.4)


def test_normalized_equalises_every_iteration():
    """Eq. 7 at every call."""
    weight = IoUBalancedLocWeight("normalized", lam=1.8).train()
    values = []
    with EventStorage():
        for seed in (7, 8, 9):
            pred, target, iou = _loc_batch(seed)
            balanced = iou_balanced_smooth_l1_loss(pred, target, iou, lam=1.8, beta=1.0,
                                                   w_loc=weight)
            torch.testing.assert_close(balanced, smooth_l1_loss(pred, target, 1.0, "sum"),
                                       rtol=1e-5, atol=0)
            values.append(normalized_w_loc(
                smooth_l1_loss(pred, target, 1.0, "none").sum(1), iou, 1.8)[0].item())
    assert len(set(values)) == 3


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="W_LOC_MODE"):
        IoUBalancedLocWeight("manual")
    with pytest.raises(ValueError, match="W_LOC"):
        IoUBalancedLocWeight("fixed", w_loc=0.0)


def test_empty_inputs_give_finite_losses_and_backward():
    """at loss level: zero rows and zero positives."""
    logits = torch.zeros(0, 6, requires_grad=True)
    loss = iou_balanced_cross_entropy(logits, torch.zeros(0, dtype=torch.long), torch.zeros(0),
                                      eta=1.3)
    loss.backward()
    assert loss.item() == 0
    logits = torch.randn(8, 3, requires_grad=True)
    loss = iou_balanced_sigmoid_focal_loss(logits, torch.zeros(8, 3), torch.zeros(8), eta=1.5)
    torch.testing.assert_close(loss, sigmoid_focal_loss_jit(logits, torch.zeros(8, 3), 0.25, 2.0,
                                                            reduction="sum"))
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # positives whose regressed IoU is 0: weights 0, no NaN
    targets = torch.eye(3)[[0, 1, 2, 0]]
    loss = iou_balanced_sigmoid_focal_loss(torch.randn(4, 3), targets, torch.zeros(4), eta=1.5)
    assert torch.isfinite(loss)
