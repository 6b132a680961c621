"""RGA (paper Eq. 1): schedule, gradient scaling of exactly the R-CNN parameters, weight decay,
parameter selection, and the hook's logging."""
from types import SimpleNamespace

import pytest
import torch

from detectron2.structures import BitMasks
from detectron2.utils.events import EventStorage
from rga_prm.gradient_annealing import GradientAnnealingHook, rga_lambda, rga_parameters
from tests.conftest import config_path
from tests.model_checks import build_model_from_config, make_batch

SHAPES = config_path("shapes", "faster_rcnn_R_18_FPN.yaml")
PRM = ["MODEL.ROI_HEADS.NAME", "ParallelROIHeads", "MODEL.PRM.BATCH_SIZE_PER_IMAGE", "64"]
CASCADE_PRM = ["MODEL.ROI_HEADS.NAME", "ParallelCascadeROIHeads", "MODEL.PRM.BATCH_SIZE_PER_IMAGE",
               "64", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True"]
MASK = ["MODEL.MASK_ON", "True"]


def test_schedule_matches_eq1():
    assert rga_lambda(0, 1000) == 7.0
    assert rga_lambda(500, 1000) == 4.0
    assert rga_lambda(999, 1000) == pytest.approx(1.006, abs=1e-12)
    values = [rga_lambda(t, 1000) for t in range(1000)]
    assert all(a > b for a, b in zip(values, values[1:])) and min(values) >= 1.0
    assert {rga_lambda(t, 1000, lambda0=1.0) for t in range(1000)} == {1.0}
    assert {rga_lambda(t, 1000, anneal=False) for t in (0, 500, 999)} == {7.0}
    with pytest.raises(ValueError, match="LAMBDA0"):
        rga_lambda(0, 1000, lambda0=0.5)
    with pytest.raises(ValueError, match="t=1000"):
        rga_lambda(1000, 1000)


def _batch(model_cfg):
    batch = make_batch((3, 2), model_cfg.MODEL.ROI_HEADS.NUM_CLASSES,
                       sizes=((128, 160), (128, 159)), seed=1)
    for d in batch:  # box-shaped masks, for configs with a mask head
        inst, (h, w) = d["instances"], d["instances"].image_size
        masks = torch.zeros(len(inst), h, w, dtype=torch.bool)
        for m, (x0, y0, x1, y1) in zip(masks, inst.gt_boxes.tensor.long().tolist()):
            m[y0:y1, x0:x1] = True
        inst.gt_masks = BitMasks(masks)
    return batch


def _grads(model, batch, hook=None, iteration=0, max_iter=10):
    """Gradients of one seeded training step; with ``hook``, RGA at (iteration, max_iter)."""
    model.train()
    model.zero_grad()
    with EventStorage() as storage:
        if hook is not None:
            hook.trainer = SimpleNamespace(model=model, iter=iteration, max_iter=max_iter)
            hook.before_train()
            hook.before_step()
        torch.manual_seed(0)
        sum(model(batch).values()).backward()
        if hook is not None:
            hook.after_train()
            assert storage.latest()["rga/lambda"][0] == hook.current_lambda
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("opts", [MASK, PRM, CASCADE_PRM],
                         ids=["faster+mask", "prm", "cascade_prm"])
def test_only_rcnn_parameter_gradients_are_scaled_by_lambda(opts):
    cfg, model = build_model_from_config(SHAPES, *opts)
    batch = _batch(cfg)
    reference = _grads(model, batch)
    hook = GradientAnnealingHook(lambda0=7.0)
    scaled = _grads(model, batch, hook, iteration=5, max_iter=10)
    lam = 7.0 - 6.0 * 5 / 10
    assert hook.current_lambda == lam
    selected = {id(p) for p in rga_parameters(model)}
    assert set(reference) == set(scaled)
    n_scaled = 0
    for name, p in model.named_parameters():
        if name not in reference:
            continue
        if id(p) in selected:
            n_scaled += 1
            torch.testing.assert_close(scaled[name], lam * reference[name], rtol=1e-6, atol=0)
        else:  # backbone, FPN, RPN, mask head: identical (the R-CNN loss weight is unchanged)
            assert name.startswith(("backbone.", "proposal_generator.", "roi_heads.mask_head."))
            assert torch.equal(scaled[name], reference[name]), name
    assert n_scaled == len(selected)
    # the mask head did train and was left alone
    if opts is MASK:
        assert any(n.startswith("roi_heads.mask_head.") for n in reference)
    if opts is PRM:  # hooks removed by after_train: a further step is unscaled again
        again = _grads(model, batch)
        assert all(torch.equal(again[n], reference[n]) for n in reference)


def test_weight_decay_is_not_scaled():
    cfg, model = build_model_from_config(SHAPES)
    batch = _batch(cfg)
    grad = _grads(model, batch)["roi_heads.box_head.fc1.weight"]
    head = model.roi_heads.box_head.fc1.weight
    theta = head.detach().clone()
    lr, wd = 0.1, 0.01
    optimizer = torch.optim.SGD([head], lr=lr, momentum=0.0, weight_decay=wd)
    _grads(model, batch, GradientAnnealingHook(lambda0=7.0), iteration=0, max_iter=10)
    optimizer.step()
    expected = theta - lr * (7.0 * grad + wd * theta)
    torch.testing.assert_close(head.detach(), expected, rtol=1e-5, atol=1e-7)
    wrong = theta - lr * 7.0 * (grad + wd * theta)  # a loss weight would scale decay too
    assert not torch.allclose(head.detach(), wrong, rtol=1e-5, atol=1e-7)


def _ids(*modules):
    return {id(p) for m in modules for p in m.parameters()}


def test_selected_parameter_sets():
    _, faster = build_model_from_config(SHAPES, *MASK)
    rh = faster.roi_heads
    assert {id(p) for p in rga_parameters(faster)} == _ids(rh.box_head, rh.box_predictor)

    _, cascade = build_model_from_config(
        SHAPES, "MODEL.ROI_HEADS.NAME", "CascadeROIHeads",
        "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True")
    rh = cascade.roi_heads
    assert len(rh.box_head) == 3
    assert {id(p) for p in rga_parameters(cascade)} == _ids(*rh.box_head, *rh.box_predictor)

    _, prm = build_model_from_config(SHAPES, *CASCADE_PRM, "MODEL.PRM.POSITIVE_FRACTIONS",
                                     "[0.5, 0.1, 0.25]", "MODEL.PRM.LOSS_WEIGHTS", "[1., 1., 1.]")
    rh = prm.roi_heads
    modules = [m for s in range(3) for k in range(3) for m in (rh.box_head[s][k],
                                                               rh.box_predictor[s][k])]
    assert len({id(m) for m in modules}) == 18
    assert {id(p) for p in rga_parameters(prm)} == _ids(*modules)

    for model in (faster, cascade, prm):
        selected = {id(p) for p in rga_parameters(model)}
        assert not selected & _ids(model.backbone, model.proposal_generator)


def test_rga_modules_hook_of_roi_heads_is_used():
    _, model = build_model_from_config(SHAPES)
    model.roi_heads.rga_modules = lambda: [model.roi_heads.box_predictor]
    assert {id(p) for p in rga_parameters(model)} == _ids(model.roi_heads.box_predictor)


def test_fails_loudly_when_nothing_is_selected():
    _, model = build_model_from_config(SHAPES)
    for p in model.roi_heads.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable R-CNN parameters"):
        rga_parameters(model)
    with pytest.raises(ValueError, match="two-stage"):
        rga_parameters(torch.nn.Linear(2, 2))
    model.roi_heads.rga_modules = lambda: [model.backbone]
    for p in model.backbone.parameters():
        p.requires_grad_(True)
    with pytest.raises(ValueError, match="overlaps model.backbone"):
        rga_parameters(model)
