"""d2ext.solver: SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model", one global gradient norm clipped
at CLIP_VALUE (torch.nn.utils.clip_grad_norm_, mmdetection's grad_clip), after RGA's scaling
and after AMP's unscaling; the other clip types are detectron2's."""
import math

import pytest
import torch
from torch import nn

import train_net
from d2ext.benchmark import BenchmarkTrainer
from d2ext.solver import build_optimizer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer as build_detectron2_optimizer
from detectron2.utils.events import EventStorage
from rga_prm.gradient_annealing import GradientAnnealingHook, rga_parameters
from tests.conftest import config_path, read_metrics, run_train_net
from tests.model_checks import make_batch


def _cfg(clip_type="full_model", clip_value=4.0, norm_type=2.0, enabled=True, lr=0.0):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = lr
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    clip = cfg.SOLVER.CLIP_GRADIENTS
    clip.ENABLED, clip.CLIP_TYPE = enabled, clip_type
    clip.CLIP_VALUE, clip.NORM_TYPE = clip_value, norm_type
    return cfg


def _model(grads):
    """A model with one bias-free linear layer per gradient in ``grads``, whose ``.grad`` they
    become."""
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(g.shape[1], g.shape[0], bias=False) for g in grads])
    for layer, g in zip(model, grads):
        layer.weight.grad = g.clone()
    return model


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _global_norm(grads, norm_type=2.0):
    return torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(g, norm_type) for g in grads]), norm_type).item()


GRADS = [torch.full((2, 2), 1.5), torch.full((4, 1), 2.0)]  # norms 3 and 4: global norm 5


def test_global_norm_above_clip_value_is_clipped_to_it_and_logged():
    model = _model(GRADS)
    optimizer = build_optimizer(_cfg(clip_value=2.5), model)
    with EventStorage() as storage:
        optimizer.step()
    assert storage.latest()["grad_norm"][0] == pytest.approx(5.0)
    assert _global_norm(_grads(model)) == pytest.approx(2.5, rel=1e-5)
    for g, clipped in zip(GRADS, _grads(model)):  # one factor for all: the direction is kept
        torch.testing.assert_close(clipped, g * 0.5, rtol=1e-5, atol=0)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_gradients_below_clip_value_are_unchanged(norm_type):
    model = _model(GRADS)
    clip_value = 1.01 * _global_norm(GRADS, norm_type)
    build_optimizer(_cfg(clip_value=clip_value, norm_type=norm_type), model).step()  # no storage
    for g, kept in zip(GRADS, _grads(model)):
        assert torch.equal(kept, g)


def test_one_global_norm_not_one_per_parameter():
    """Norms 3 and 4 at CLIP_VALUE 4.5: per parameter ("norm") nothing exceeds 4.5; the global
    norm 5 does, so both gradients are scaled by 4.5/5."""
    per_parameter, full_model = _model(GRADS), _model(GRADS)
    build_optimizer(_cfg("norm", clip_value=4.5), per_parameter).step()
    build_optimizer(_cfg("full_model", clip_value=4.5), full_model).step()
    for g, kept, clipped in zip(GRADS, _grads(per_parameter), _grads(full_model)):
        assert torch.equal(kept, g)
        torch.testing.assert_close(clipped, g * 0.9, rtol=1e-5, atol=0)


@pytest.mark.parametrize("clip", [dict(clip_type="norm", clip_value=2.0),
                                  dict(clip_type="value", clip_value=1.0),
                                  dict(clip_type="full_model", enabled=False)],
                         ids=["norm", "value", "disabled"])
def test_other_clip_types_are_detectron2s(clip):
    cfg = _cfg(lr=0.1, **clip)
    ours, theirs = _model(GRADS), _model(GRADS)
    ours_opt, theirs_opt = build_optimizer(cfg, ours), build_detectron2_optimizer(cfg, theirs)
    assert type(ours_opt).__name__ == type(theirs_opt).__name__
    assert type(ours_opt).__mro__[1:] == type(theirs_opt).__mro__[1:]
    with EventStorage() as storage:
        ours_opt.step()
    theirs_opt.step()
    assert "grad_norm" not in storage.latest()
    for a, b in zip(list(ours.parameters()) + _grads(ours),
                    list(theirs.parameters()) + _grads(theirs)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("key,value", [("CLIP_VALUE", 0.0), ("CLIP_VALUE", -35.0),
                                       ("CLIP_VALUE", math.nan), ("NORM_TYPE", 0.0),
                                       ("NORM_TYPE", -2.0), ("NORM_TYPE", math.nan)])
def test_invalid_clip_value_or_norm_type_names_the_key(key, value):
    cfg = _cfg()
    cfg.SOLVER.CLIP_GRADIENTS[key] = value
    with pytest.raises(ValueError, match=f"SOLVER.CLIP_GRADIENTS.{key} = "):
        build_optimizer(cfg, _model(GRADS))


def test_trainer_builds_the_clipping_optimizer():
    optimizer = train_net.Trainer.build_optimizer(_cfg(), _model(GRADS))
    assert type(optimizer).__name__ == "SGDWithFullModelGradientClip"
    assert isinstance(optimizer, torch.optim.SGD)


def test_train_net_logs_grad_norm_every_iteration(tiny_shapes, tmp_path):
    """The RGA shapes row trains with the full_model clip; metrics.json has the norm."""
    run_train_net(config_path("shapes", "rga_R_18_FPN.yaml"), tmp_path, "SOLVER.MAX_ITER", "2",
                  "SOLVER.IMS_PER_BATCH", "1", "SOLVER.CHECKPOINT_PERIOD", "100",
                  "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full_model",
                  "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "35.0")
    logged = [m for m in read_metrics(tmp_path) if "total_loss" in m]
    assert [m["iteration"] for m in logged] == [1]
    assert math.isfinite(logged[0]["grad_norm"]) and logged[0]["grad_norm"] > 0


def test_amp_grad_scaler_steps_with_unscaled_gradients_and_skips_inf():
    """detectron2's AMPTrainer calls ``grad_scaler.step(optimizer)``: it unscales the gradients
    before ``optimizer.step`` (so the clip sees the true norm) and skips the step on inf/NaN."""
    model = _model(GRADS)
    optimizer = build_optimizer(_cfg(clip_value=2.5, lr=0.1), model)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    optimizer.zero_grad()
    loss = sum((layer.weight * g).sum() for layer, g in zip(model, GRADS))  # d loss/d w = g
    scaler.scale(loss).backward()
    assert _global_norm(_grads(model)) == pytest.approx(5.0 * 1024)
    with EventStorage() as storage:
        scaler.step(optimizer)
    assert storage.latest()["grad_norm"][0] == pytest.approx(5.0)
    assert _global_norm(_grads(model)) == pytest.approx(2.5, rel=1e-5)

    scaler.update()
    weights = [p.detach().clone() for p in model.parameters()]
    model[0].weight.grad[0, 0] = math.inf
    with EventStorage() as storage:
        scaler.step(optimizer)
    assert "grad_norm" not in storage.latest()
    assert all(torch.equal(w, p) for w, p in zip(weights, model.parameters()))


def _rga_step(cfg, model, hooks):
    """One BenchmarkTrainer step (lr 0: the weights stay); returns the logged pre-clip norm and
    the gradients after the clip."""
    trainer = BenchmarkTrainer(cfg, model, [make_batch((3, 2), 3, seed=1)], hooks=hooks, lr=0.0)
    torch.manual_seed(1)  # the same RoI sampling in every step
    trainer.step()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return trainer.storage.latest()["grad_norm"][0], grads


def test_rga_scaled_gradients_are_clipped():
    """RGA (lambda 7) scales the R-CNN gradients during backward; the clip sees the scaled norm:
    a CLIP_VALUE between the unscaled and the scaled norm clips the RGA step only."""
    opts = ["MODEL.DEVICE", "cpu", "SOLVER.CLIP_GRADIENTS.ENABLED", "True",
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full_model"]
    rga_config = config_path("shapes", "rga_R_18_FPN.yaml")
    cfg = train_net.load_config(rga_config, opts + ["SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "1e9"])
    torch.manual_seed(0)
    model = build_model(cfg)
    rcnn = {id(p) for p in rga_parameters(model)}
    plain_norm, plain = _rga_step(cfg, model, [])
    assert _global_norm(plain.values()) == pytest.approx(plain_norm, rel=1e-5)
    rcnn_sq = sum(g.square().sum().item() for n, g in plain.items()
                  if id(model.get_parameter(n)) in rcnn)
    scaled_norm = math.sqrt(plain_norm ** 2 + (49 - 1) * rcnn_sq)
    assert scaled_norm > 1.5 * plain_norm
    clip_value = math.sqrt(plain_norm * scaled_norm)

    cfg = train_net.load_config(rga_config, opts + ["SOLVER.CLIP_GRADIENTS.CLIP_VALUE",
                                                    str(clip_value)])
    norm, unclipped = _rga_step(cfg, model, [])
    assert norm == pytest.approx(plain_norm, rel=1e-5)
    assert all(torch.equal(unclipped[n], plain[n]) for n in plain)

    hook = GradientAnnealingHook(lambda0=7.0)  # lambda 7 at iteration 0
    norm, clipped = _rga_step(cfg, model, [hook])
    assert hook.current_lambda == 7.0
    assert norm == pytest.approx(scaled_norm, rel=1e-4)
    assert _global_norm(clipped.values()) == pytest.approx(clip_value, rel=1e-4)
    factor = clip_value / scaled_norm
    for name, g in plain.items():
        lam = 7.0 if id(model.get_parameter(name)) in rcnn else 1.0
        torch.testing.assert_close(clipped[name], g * lam * factor, rtol=1e-3, atol=1e-7)
