"""IoUBalancedRetinaNet and IoUBalancedROIHeads against detectron2's own losses, calibration
in a detector, and a few train_net.py iterations per shapes config."""
import math

import pytest
import torch

from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from projects.iou_balanced import (
    IoUBalancedFastRCNNOutputLayers,
    IoUBalancedRetinaNet,
    IoUBalancedROIHeads,
)
from tests.conftest import config_path, read_metrics, run_train_net
from tests.model_checks import build_model_from_config, make_batch, train_step

RETINA_CFG = config_path("shapes", "iou_balanced_retinanet_R_18_FPN.yaml")
FRCNN_CFG = config_path("shapes", "iou_balanced_faster_rcnn_R_18_FPN.yaml")
PLAIN = ["MODEL.IOU_BALANCED.ETA", "0.0", "MODEL.IOU_BALANCED.LAMBDA", "0.0",
         "MODEL.IOU_BALANCED.W_LOC_MODE", "fixed", "MODEL.IOU_BALANCED.W_LOC", "1.0"]


def _pair(config, baseline_opts, *opts):
    """(baseline, balanced) models with identical weights."""
    _, balanced = build_model_from_config(config, *opts)
    _, baseline = build_model_from_config(config, *baseline_opts)
    missing, unexpected = baseline.load_state_dict(balanced.state_dict(), strict=False)
    assert not missing and all("loc_weight" in k for k in unexpected)
    return baseline, balanced


def _assert_same_losses(a, b, rtol=1e-5):
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=1e-7, msg=k)


@pytest.mark.parametrize("scope", ["batch", "level"])
def test_retinanet_reduces_to_detectron2_losses(scope):
    """eta 0, lambda 0, w_loc 1 give RetinaNet's losses (same weights, same batch)."""
    baseline, balanced = _pair(RETINA_CFG, ["MODEL.META_ARCHITECTURE", "RetinaNet"], *PLAIN,
                               "MODEL.IOU_BALANCED.NORMALIZER_SCOPE", scope)
    assert type(balanced) is IoUBalancedRetinaNet and type(baseline) is not IoUBalancedRetinaNet
    batch = make_batch((3, 2), 5)
    _assert_same_losses(train_step(baseline, batch), train_step(balanced, batch))


def _cls_grad(model, batch):
    model.train()
    with EventStorage():
        losses = model(batch)
        (grad,) = torch.autograd.grad(losses["loss_cls"], model.head.cls_score.weight,
                                      retain_graph=True)
    return losses, grad


def test_retinanet_default_weights_keep_cls_sum_but_change_gradients():
    """Eq. 4 in the detector: the value of loss_cls is RetinaNet's, its gradient is not."""
    baseline, balanced = _pair(RETINA_CFG, ["MODEL.META_ARCHITECTURE", "RetinaNet"],
                               "MODEL.IOU_BALANCED.W_LOC_MODE", "fixed")
    batch = make_batch((3, 2), 5)
    (plain, g_plain), (bal, g_bal) = _cls_grad(baseline, batch), _cls_grad(balanced, batch)
    torch.testing.assert_close(bal["loss_cls"], plain["loss_cls"], rtol=1e-5, atol=0)
    assert not torch.allclose(g_bal, g_plain, rtol=1e-3, atol=0)
    assert not torch.isclose(plain["loss_box_reg"], bal["loss_box_reg"], rtol=1e-3)


def test_retinanet_calibrates_on_first_positive_iteration_then_freezes():
    """In the detector: an empty-GT iteration defers; then loss_box_reg == plain."""
    baseline, balanced = _pair(RETINA_CFG, ["MODEL.META_ARCHITECTURE", "RetinaNet"])
    assert balanced.loc_weight.mode == "calibrate"
    empty = train_step(balanced, make_batch((0, 0), 5))
    assert all(torch.isfinite(v) for v in empty.values())
    assert not balanced.loc_weight.calibrated
    train_step(baseline, make_batch((0, 0), 5))  # keep the EMA normalisers in step

    batch = make_batch((3, 2), 5, seed=1)
    plain, bal = train_step(baseline, batch), train_step(balanced, batch)
    assert bool(balanced.loc_weight.calibrated)
    torch.testing.assert_close(bal["loss_box_reg"], plain["loss_box_reg"], rtol=1e-5, atol=0)
    w_loc = float(balanced.loc_weight.w_loc)
    batch = make_batch((2, 4), 5, seed=2)
    plain, bal = train_step(baseline, batch), train_step(balanced, batch)
    assert float(balanced.loc_weight.w_loc) == w_loc
    assert not torch.isclose(bal["loss_box_reg"], plain["loss_box_reg"], rtol=1e-4)


def test_faster_rcnn_roi_heads_swap_only_the_predictor():
    baseline, balanced = _pair(FRCNN_CFG, ["MODEL.ROI_HEADS.NAME", "StandardROIHeads"], *PLAIN)
    assert type(balanced.roi_heads) is IoUBalancedROIHeads
    assert type(balanced.roi_heads.box_predictor) is IoUBalancedFastRCNNOutputLayers
    assert type(baseline.roi_heads.box_predictor) is FastRCNNOutputLayers
    torch.manual_seed(0)  # the RPN samples anchors and the ROI heads sample proposals
    plain = train_step(baseline, make_batch((3, 2), 5))
    torch.manual_seed(0)
    _assert_same_losses(plain, train_step(balanced, make_batch((3, 2), 5)))


def _proposals(seed, num_classes=3, sizes=(40, 0, 25)):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        inst = Instances((100, 120))
        xy = torch.rand(n, 2, generator=g) * 60
        wh = 10 + torch.rand(n, 2, generator=g) * 30
        inst.proposal_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        jitter = torch.randn(n, 4, generator=g) * 3
        inst.gt_boxes = Boxes(inst.proposal_boxes.tensor + jitter)
        inst.gt_classes = torch.randint(num_classes + 1, (n,), generator=g)
        out.append(inst)
    return out


def _predictors(agnostic, beta, **balanced):
    kwargs = dict(box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)), num_classes=3,
                  cls_agnostic_bbox_reg=agnostic, smooth_l1_beta=beta)
    torch.manual_seed(0)
    plain = FastRCNNOutputLayers(ShapeSpec(channels=16), **kwargs)
    torch.manual_seed(0)
    bal = IoUBalancedFastRCNNOutputLayers(ShapeSpec(channels=16), **kwargs, **balanced)
    with torch.no_grad():  # trained-looking deltas, so that IoUs vary
        for m in (plain, bal):
            m.bbox_pred.weight.mul_(300)
            m.cls_score.weight.mul_(100)
    return plain, bal


@pytest.mark.parametrize("agnostic,beta", [(True, 1.0), (False, 0.0), (False, 0.5)])
def test_fast_rcnn_losses_reduce_to_detectron2(agnostic, beta):
    """eta 0, lambda 0, w_loc 1 give FastRCNNOutputLayers.losses (same features and proposals)."""
    plain, bal = _predictors(agnostic, beta, eta=0.0, lam=0.0, w_loc=1.0)
    proposals = _proposals(0)
    x = torch.randn(65, 16)
    with EventStorage():
        expected = plain.losses(plain(x), proposals)
        got = bal.losses(bal(x), proposals)
    _assert_same_losses(expected, got)


def test_fast_rcnn_balanced_losses_and_empty_batches():
    plain, bal = _predictors(True, 1.0, eta=1.3, lam=1.5, w_loc_mode="calibrate")
    proposals = _proposals(1)
    x = torch.randn(65, 16)
    with EventStorage():
        expected = plain.losses(plain(x), proposals)
        got = bal.losses(bal(x), proposals)
        # calibrated on this first batch: the regression sum equals the plain one
        torch.testing.assert_close(got["loss_box_reg"], expected["loss_box_reg"], rtol=1e-5,
                                   atol=0)
        # Eq. 4: the classification loss value is unchanged, its gradient is re-weighted
        torch.testing.assert_close(got["loss_cls"], expected["loss_cls"], rtol=1e-5, atol=0)
        g_plain = torch.autograd.grad(expected["loss_cls"], plain.cls_score.weight)[0]
        g_bal = torch.autograd.grad(got["loss_cls"], bal.cls_score.weight)[0]
        assert not torch.allclose(g_bal, g_plain, rtol=1e-3, atol=0)
        for props in ([], _proposals(2, sizes=(0, 0)), _proposals(3, sizes=(5,))):
            for p in props:
                p.gt_classes[:] = 3  # background only
            n = sum(len(p) for p in props)
            feats = torch.randn(n, 16, requires_grad=True)
            losses = bal.losses(bal(feats), props)
            assert all(torch.isfinite(v) for v in losses.values())
            sum(losses.values()).backward()
    with pytest.raises(ValueError, match="NORMALIZER_SCOPE"):
        _predictors(True, 1.0, normalizer_scope="level")
    with pytest.raises(ValueError, match="BBOX_REG_LOSS_TYPE"):
        _predictors(True, 1.0, box_reg_loss_type="giou")


def test_bad_config_values_fail_clearly():
    with pytest.raises(ValueError, match="MODEL.IOU_BALANCED.W_LOC_MODE"):
        build_model_from_config(RETINA_CFG, "MODEL.IOU_BALANCED.W_LOC_MODE", "manual")
    with pytest.raises(ValueError, match="MODEL.IOU_BALANCED.ETA"):
        build_model_from_config(FRCNN_CFG, "MODEL.IOU_BALANCED.ETA", "-1.0")


FEW_ITERS = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "(2,)",
             "SOLVER.CHECKPOINT_PERIOD", "100"]


def _w_loc_logged(out):
    return {m["iteration"]: m["iou_balanced/w_loc"] for m in read_metrics(out)
            if "iou_balanced/w_loc" in m}


@pytest.mark.parametrize("config,score", [
    (RETINA_CFG, "MODEL.RETINANET.SCORE_THRESH_TEST"),
    (FRCNN_CFG, "MODEL.ROI_HEADS.SCORE_THRESH_TEST"),
])
def test_shapes_config_trains_evaluates_and_resumes_calibrated(tiny_shapes, tmp_path, config,
                                                               score):
    """A few train_net.py iterations + evaluation; --resume keeps the calibrated w_loc."""
    out = tmp_path / "run"
    run_train_net(config, out, *FEW_ITERS, "SOLVER.MAX_ITER", "3", score, "0.0")
    metrics = read_metrics(out)
    losses = {k: v for m in metrics for k, v in m.items() if k.startswith("loss")}
    assert {"loss_cls", "loss_box_reg"} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values())
    (logged,) = [m for m in metrics if "bbox/AP" in m]
    assert {"bbox/AP", "bbox/AP50", "bbox/AP90"} <= set(logged)
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    (key,) = [k for k in state if k.endswith("loc_weight.w_loc")]
    assert bool(state[key.replace("w_loc", "calibrated")])
    w_loc = float(state[key])
    assert _w_loc_logged(out) == {2: pytest.approx(w_loc)}

    # continue the run to 5 iterations: the checkpoint's w_loc is kept, not recalibrated
    run_train_net(config, out, *FEW_ITERS, "SOLVER.MAX_ITER", "5", score, "0.0", resume=True)
    assert _w_loc_logged(out) == {2: pytest.approx(w_loc), 4: pytest.approx(w_loc)}
