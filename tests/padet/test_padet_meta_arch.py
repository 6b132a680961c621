"""PADet detection module: theta rule (paper §3.1), detection hard-negative mining,
inference (paper §3.3 "Inference")."""
import math

import pytest
import torch
import torch.nn.functional as F

from train_net import load_config
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from tests.conftest import config_path

C = 5
CONFIG = config_path("shapes", "padet_vgg16_0.25x_256_flip_2600it.yaml")


@pytest.fixture(scope="module")
def model():
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    return build_model(cfg)


def _logit(p):
    return math.log(p / (1 - p))


def _gt(boxes, classes, size=(100, 100)):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).view(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    return inst


def test_theta_ignores_low_score_negatives_but_never_positives(model):
    promoted = torch.tensor([[[10.0, 10.0, 30.0, 30.0],    # = GT: positive
                              [60.0, 60.0, 80.0, 80.0],    # negative, p = 0.005: ignored
                              [60.0, 10.0, 80.0, 30.0],    # negative, p = 0.5: kept
                              [10.0, 10.0, 30.0, 24.0]]])  # IoU 0.7: positive, p = 0.005
    apm_logits = torch.tensor([[_logit(0.005), _logit(0.005), _logit(0.5), _logit(0.005)]])
    targets, pos, negatives, matched = model.label_promoted(
        promoted, apm_logits, [_gt([10.0, 10.0, 30.0, 30.0], [3])])
    assert pos.tolist() == [[True, False, False, True]]
    assert negatives.tolist() == [[False, False, True, False]]
    assert targets.tolist() == [[3, C, C, 3]]
    assert torch.equal(matched[0, 3], torch.tensor([10.0, 10.0, 30.0, 30.0]))


def test_detection_loss_mines_three_negatives_per_positive(model):
    torch.manual_seed(0)
    m = 40
    xy = torch.rand(1, m, 2) * 60 + 40
    promoted = torch.cat([xy, xy + 10], dim=-1)
    promoted[0, 0] = torch.tensor([0.0, 0.0, 20.0, 20.0])
    apm_logits = torch.full((1, m), _logit(0.5))
    apm_logits[0, 1:6] = _logit(0.001)  # five easy negatives, ignored
    cls_logits = torch.randn(1, m, C + 1, requires_grad=True)
    cls_logits.data[0, 1:6, C] = -10.0  # would be the hardest negatives if not ignored
    reg = torch.zeros(1, m, 4, requires_grad=True)
    with EventStorage():
        losses = model.losses(promoted, apm_logits, cls_logits, reg, [_gt([0, 0, 20, 20], [2])])
    ce = F.cross_entropy(cls_logits[0], torch.tensor([2] + [C] * (m - 1)), reduction="none")
    hard = ce[6:].sort(descending=True).values[:3]  # 3 x 1 positive, among p >= theta
    assert torch.allclose(losses["loss_det_cls"], ce[0] + hard.sum())  # N_d = 1
    assert losses["loss_det_box_reg"] == 0  # the promoted anchor already equals the GT
    losses["loss_det_cls"].backward()
    assert (cls_logits.grad[0].abs().sum(dim=1) > 0).sum() == 4


def test_empty_image_gives_finite_losses(model):
    promoted = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 30.0, 30.0]]])
    cls_logits = torch.randn(1, 2, C + 1, requires_grad=True)
    with EventStorage():
        losses = model.losses(promoted, torch.zeros(1, 2), cls_logits,
                              torch.zeros(1, 2, 4, requires_grad=True), [_gt([], [])])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_det_box_reg"] == 0


def test_inference_drops_low_apm_scores_and_low_class_scores(model):
    m = 4
    promoted = torch.tensor([[[10.0, 10.0, 30.0, 30.0], [50.0, 50.0, 70.0, 70.0],
                              [10.0, 50.0, 30.0, 70.0], [60.0, 5.0, 90.0, 25.0]]])
    apm_logits = torch.tensor([[_logit(0.9), _logit(0.009), _logit(0.011), _logit(0.9)]])
    cls_logits = torch.full((1, m, C + 1), -20.0)
    cls_logits[0, :3, 1] = 10.0  # anchors 0-2: class 1, score ~1
    cls_logits[0, 3, C] = 10.0
    cls_logits[0, 3, 4] = 10.0 + math.log(0.009 / (1 - 0.009))  # class 4 at p = 0.009 < 0.01
    results = model.inference(promoted, apm_logits, cls_logits, torch.zeros(1, m, 4), [(100, 100)])
    r = results[0]
    assert r.pred_classes.tolist() == [1, 1]  # anchor 1 (p < theta) and anchor 3 (score) gone
    assert torch.allclose(r.pred_boxes.tensor, promoted[0, [0, 2]])
    assert (r.scores > 0.99).all()


def test_inference_keeps_at_most_300_sorted(model):
    torch.manual_seed(0)
    m = 2000
    xy = torch.rand(1, m, 2) * 900
    promoted = torch.cat([xy, xy + 8], dim=-1)
    results = model.inference(promoted, torch.zeros(1, m), torch.randn(1, m, C + 1),
                              torch.zeros(1, m, 4), [(1000, 1000)])
    scores = results[0].scores
    assert len(scores) == 300 and (scores[:-1] >= scores[1:]).all()


def test_soft_nms_rescoring_in_the_model(model):
    """Through the model: A (0.9), B (0.8) with IoU 0.5 -> B 0.4; C (IoU 0.2) unchanged."""
    a, b = [0.0, 0.0, 30.0, 30.0], [0.0, 10.0, 30.0, 40.0]  # IoU = 20/40 = 0.5
    c = [0.0, -20.0, 30.0, 10.0]  # IoU with A = 10/50 = 0.2
    promoted = torch.tensor([[a, b, c]]) + 40
    scores = torch.tensor([0.9, 0.8, 0.7])
    cls_logits = torch.full((1, 3, C + 1), -30.0)
    cls_logits[0, :, 0] = torch.log(scores)
    cls_logits[0, :, C] = torch.log(1 - scores)
    r = model.inference(promoted, torch.zeros(1, 3), cls_logits, torch.zeros(1, 3, 4),
                        [(100, 100)])[0]
    assert torch.allclose(r.scores, torch.tensor([0.9, 0.7, 0.4]), atol=1e-4)


def test_pre_nms_topk_per_class(model):
    classes = torch.tensor([0, 1, 0, 0, 1, 2])
    scores = torch.tensor([0.5, 0.9, 0.7, 0.6, 0.2, 0.3])
    anchor_idx = torch.arange(6) + 10
    saved, model.pre_nms_topk_per_class = model.pre_nms_topk_per_class, 2
    try:
        idx, cls, sc = model._topk_per_class(anchor_idx, classes, scores)
    finally:
        model.pre_nms_topk_per_class = saved
    kept = sorted(zip(cls.tolist(), idx.tolist()))
    assert kept == [(0, 12), (0, 13), (1, 11), (1, 14), (2, 15)]  # 0.5 of class 0 dropped
    assert torch.equal(sc, scores[idx - 10])


def _ablation_model(*opts):
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu", *opts])
    torch.manual_seed(0)
    return build_model(cfg)


NO_APM = ("MODEL.PADET.APM_CLS", "False", "MODEL.PADET.APM_REG", "False",
          "MODEL.PADET.FAM_MODE", "none")


def _train_step_records(model, monkeypatch):
    """One training forward; returns the losses, the initial anchors and the boxes the
    detection module was labelled against."""
    seen = {}
    anchors_fn, losses_fn = model.apm.anchors, model.losses
    monkeypatch.setattr(model.apm, "anchors",
                        lambda *a: seen.setdefault("anchors", anchors_fn(*a)))
    monkeypatch.setattr(model, "losses",
                        lambda promoted, *a: seen.setdefault("promoted", promoted) is not None
                        and losses_fn(promoted, *a))
    image = torch.randint(0, 255, (3, 160, 160), dtype=torch.uint8)
    inst = _gt([[20, 20, 60, 70], [90, 40, 150, 100]], [1, 3], (160, 160))
    model.train()
    with EventStorage():  # two images: BatchNorm needs more than one value on the 1x1 level
        losses = model([{"image": image, "instances": inst}] * 2)
    return losses, seen["anchors"], seen["promoted"]


@pytest.mark.parametrize("apm", ["on", "off"])
def test_table2_apm_switches_in_training(apm, monkeypatch):
    """APM_CLS = APM_REG = False is Table 2's encoder-decoder baseline: no APM loss and the
    detection module labels the initial anchors; with the APM, the promoted ones."""
    model = _ablation_model(*(NO_APM if apm == "off" else ()))
    losses, anchors, promoted = _train_step_records(model, monkeypatch)
    det = {"loss_det_cls", "loss_det_box_reg"}
    if apm == "off":
        assert set(losses) == det
        assert torch.equal(promoted[0], anchors)
    else:
        assert set(losses) == det | {"loss_apm_cls", "loss_apm_box_reg"}
        assert not torch.equal(promoted[0], anchors)
    assert all(torch.isfinite(v) for v in losses.values())


def test_without_apm_cls_no_negative_is_ignored_and_no_anchor_dropped():
    """APM_CLS False: the theta rule is off in training and at test (Table 2 APM_R row)."""
    model = _ablation_model("MODEL.PADET.APM_CLS", "False")
    promoted = torch.tensor([[[10.0, 10.0, 30.0, 30.0], [60.0, 60.0, 80.0, 80.0]]])
    apm_logits = torch.tensor([[_logit(0.005), _logit(0.005)]])
    _, pos, negatives, _ = model.label_promoted(promoted, apm_logits, [_gt([10, 10, 30, 30], [3])])
    assert pos.tolist() == [[True, False]] and negatives.tolist() == [[False, True]]
    cls_logits = torch.full((1, 2, C + 1), -20.0)
    cls_logits[0, :, 1] = 10.0
    r = model.inference(promoted, apm_logits, cls_logits, torch.zeros(1, 2, 4), [(100, 100)])[0]
    assert len(r) == 2  # both anchors have p < theta and are kept


def test_no_apm_with_apm_driven_fam_is_a_config_error():
    with pytest.raises(ValueError, match="FAM offsets .* come from the APM"):
        _ablation_model(*NO_APM[:4], "MODEL.PADET.FAM_MODE", "disentangled")
