"""The options of PADet's experiments (docs/padet.md#experiments): promotion by APM score
(APM_PROMOTE_THRESH), the APM on detached features (APM_DETACH), the APM loss weight
(APM_LOSS_WEIGHT) and the APM's L_b without hard-negative mining (APM_HNM_RATIO 0, the loss as
paper §3.3 writes it)."""
import math

import pytest
import torch
import torch.nn.functional as F

from detectron2.utils.events import EventStorage
from tests.conftest import config_path
from tests.model_checks import (
    assert_every_parameter_has_a_gradient, build_model_from_config, make_batch, train_step)

CONFIG = config_path("shapes", "padet_vgg16_0.25x_256_flip_2600it.yaml")
SIZES = ((96, 128), (96, 127))  # padded to 128 x 128: a fast training step


def _model(*opts):
    """The shapes model at the paper's APM loss weight 1 (the config's is 0.25), with ``opts``."""
    return build_model_from_config(CONFIG, "MODEL.PADET.APM_LOSS_WEIGHT", "1.0", *opts)[1]


def _batch():
    return make_batch((3, 2), 5, sizes=SIZES)


def _logit(p):
    return math.log(p / (1 - p))


ANCHORS = torch.tensor([[10.0, 10.0, 30.0, 30.0], [40.0, 40.0, 80.0, 60.0],
                        [0.0, 0.0, 50.0, 50.0], [20.0, 60.0, 30.0, 90.0]])
# p = 0.7, exactly 0.5, 0.2, and 1 - 1e-13 (float32's sigmoid rounds it to 1.0)
LOGITS = torch.tensor([[_logit(0.7), 0.0, _logit(0.2), 30.0]])
DELTAS = torch.tensor([[[1.0, -1.0, 0.5, 0.3], [0.5, 0.5, -0.4, 0.2],
                        [-1.0, 2.0, 0.1, -0.3], [2.0, 1.0, 0.3, 0.3]]])


def test_promotion_threshold_zero_promotes_every_anchor_as_before():
    apm = _model().apm
    assert apm.promote_thresh == 0.0  # the default
    expected = apm.box2box_transform.apply_deltas(DELTAS[0], ANCHORS)  # decode every anchor
    low_scores = torch.full_like(LOGITS, -200.0)  # p rounds to 0 in float32
    for logits in (LOGITS, low_scores):
        assert torch.allclose(apm.promote(ANCHORS, logits, DELTAS)[0], expected)
    assert apm.promoted_mask(low_scores).all()


@pytest.mark.parametrize("thresh,promoted", [(0.5, [True, True, False, True]),
                                             (0.71, [False, False, False, True]),
                                             (1.0, [False, False, False, False])])
def test_promotion_threshold_keeps_the_initial_box_below_it(thresh, promoted):
    """An anchor is promoted iff p >= threshold (p = 0.5 reaches 0.5); at 1.0 none is, even
    where float32's sigmoid rounds p to 1."""
    apm = _model("MODEL.PADET.APM_PROMOTE_THRESH", str(thresh)).apm
    assert apm.promote_thresh == thresh
    assert apm.promoted_mask(LOGITS)[0].tolist() == promoted
    boxes = apm.promote(ANCHORS, LOGITS, DELTAS)[0]
    all_promoted = apm.box2box_transform.apply_deltas(DELTAS[0], ANCHORS)
    for i, is_promoted in enumerate(promoted):
        assert torch.allclose(boxes[i], all_promoted[i] if is_promoted else ANCHORS[i])
        assert not torch.allclose(all_promoted[i], ANCHORS[i])  # the deltas do move it


def test_promotion_threshold_one_trains_the_detection_module_on_the_initial_anchors(
        monkeypatch):
    model = _model("MODEL.PADET.APM_PROMOTE_THRESH", "1.0")
    seen = {}
    anchors_fn, label_fn = model.apm.anchors, model.label_promoted
    monkeypatch.setattr(model.apm, "anchors", lambda *a: seen.setdefault("anchors", anchors_fn(*a)))
    monkeypatch.setattr(model, "label_promoted",
                        lambda promoted, *a: label_fn(seen.setdefault("promoted", promoted), *a))
    losses = train_step(model, _batch())
    assert set(losses) == {"loss_apm_cls", "loss_apm_box_reg", "loss_det_cls", "loss_det_box_reg"}
    assert torch.equal(seen["promoted"], seen["anchors"].expand_as(seen["promoted"]))
    assert_every_parameter_has_a_gradient(model, "APM_PROMOTE_THRESH 1.0")


def _apm_loss_gradients(model, losses):
    """Backward of the APM losses alone: (backbone gradients, APM gradients)."""
    model.zero_grad()
    sum(v for k, v in losses.items() if k.startswith("loss_apm")).backward(retain_graph=True)
    return ([p.grad for p in model.backbone.parameters()],
            [p.grad for p in model.apm.parameters()])


def test_detached_apm_losses_train_the_apm_but_not_the_shared_encoder_decoder():
    batch = _batch()
    losses = {}
    for detach in (False, True):
        model = _model("MODEL.PADET.APM_DETACH", str(detach))
        model.train()
        with EventStorage():
            losses[detach] = model(batch)
        backbone, apm = _apm_loss_gradients(model, losses[detach])
        assert all(g is not None for g in apm) and any(g.abs().sum() > 0 for g in apm)
        reaches_backbone = any(g is not None and g.abs().sum() > 0 for g in backbone)
        assert reaches_backbone != detach
        model.zero_grad()  # the total loss still gives every parameter a gradient
        sum(losses[detach].values()).backward()
        assert_every_parameter_has_a_gradient(model, f"APM_DETACH {detach}")
    # detaching changes the gradients only, not the forward pass
    assert {k: v.item() for k, v in losses[True].items()} == \
        {k: v.item() for k, v in losses[False].items()}


def test_apm_loss_weight_scales_both_apm_losses_exactly():
    batch = _batch()
    plain = train_step(_model(), batch)
    weighted = train_step(_model("MODEL.PADET.APM_LOSS_WEIGHT", "0.25"), batch)
    assert set(plain) == set(weighted)
    for key in ("loss_apm_cls", "loss_apm_box_reg"):
        assert torch.equal(weighted[key], 0.25 * plain[key])  # a power of 2: exact in floats
    for key in ("loss_det_cls", "loss_det_box_reg"):
        assert torch.equal(weighted[key], plain[key])


@pytest.mark.parametrize("ratio,negatives", [(3, [3, 4, 5]), (0, [1, 2, 3, 4, 5, 6])])
def test_apm_mining_ratio_zero_trains_every_negative(ratio, negatives, monkeypatch):
    """L_b with 3:1 mining keeps the 3 hardest negatives of one positive; with ratio 0 every
    negative trains (§3.3's formula), normalised by the positives; ignored anchors never."""
    assert _model("MODEL.PADET.APM_HNM_RATIO", "0").apm.hnm_ratio == 0  # the key is read
    apm = _model().apm
    monkeypatch.setattr(apm, "hnm_ratio", ratio)
    labels = torch.tensor([[1, 0, 0, 0, 0, 0, 0, -1]], dtype=torch.int8)
    logits = torch.tensor([[0.0, -3.0, -2.0, 1.0, 2.0, 3.0, -1.0, 5.0]], requires_grad=True)
    with EventStorage():
        loss = apm.losses(None, logits, None, labels, None)["loss_apm_cls"]
    loss.backward()
    trained = (logits.grad[0] != 0).nonzero().flatten().tolist()
    assert trained == [0] + negatives
    bce = F.binary_cross_entropy_with_logits(logits[0], (labels[0] == 1).float(), reduction="none")
    assert torch.allclose(loss, bce[[0] + negatives].sum())  # N_apm = 1
