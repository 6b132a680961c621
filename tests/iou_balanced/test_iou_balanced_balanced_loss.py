"""IoUBalancedLoss, the loss assembly shared by the IoU-balanced heads, on hand-built tensors."""
import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import sigmoid_focal_loss_jit, smooth_l1_loss

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.utils.events import EventStorage
from projects.iou_balanced import (
    IoUBalancedFastRCNNOutputLayers,
    IoUBalancedLoss,
    add_iou_balanced_config,
    iou_balanced_cross_entropy,
    iou_balanced_options,
    iou_balanced_sigmoid_focal_loss,
    iou_balanced_smooth_l1_loss,
    regressed_iou,
)

CODER = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
C = 4  # classes; label C is background
DISABLED = dict(cls_enabled=False, loc_enabled=False)


def _samples(seed=0, n=30):
    """Logits, labels, the positives' mask, deltas, boxes, GT boxes and GT deltas."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, C + 1, generator=g) * 3
    labels = torch.randint(C + 1, (n,), generator=g)
    positives = labels < C
    xy = torch.rand(n, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 30], dim=1)
    gt_boxes = boxes + torch.randn(n, 4, generator=g).clamp(-2, 2)
    deltas = torch.randn(n, 4, generator=g) * 0.3
    p = positives
    gt_deltas = CODER.get_deltas(boxes[p], gt_boxes[p])
    return logits, labels, p, deltas[p], boxes[p], gt_boxes[p], gt_deltas


def test_options_come_from_the_config_node():
    cfg = get_cfg()
    add_iou_balanced_config(cfg)
    cfg.MODEL.IOU_BALANCED.merge_from_list(["ETA", 1.3, "LOC_ENABLED", False,
                                            "W_LOC_MODE", "calibrate"])
    ib = IoUBalancedLoss(**iou_balanced_options(cfg))
    assert (ib.cls_enabled, ib.loc_enabled, ib.eta, ib.lam) == (True, False, 1.3, 1.5)
    assert ib.loc_weight.mode == "calibrate" and ib.normalizer_scope == "batch"
    with pytest.raises(ValueError, match="normalizer_scope"):
        IoUBalancedLoss(normalizer_scope="image")
    with pytest.raises(ValueError, match="W_LOC_MODE"):
        IoUBalancedLoss(w_loc_mode="manual")


def test_box_reg_loss_type_must_be_smooth_l1_only_for_the_balanced_localization():
    with pytest.raises(ValueError, match="MODEL.X.BBOX_REG_LOSS_TYPE 'smooth_l1'.*'giou'"):
        IoUBalancedLoss().check_box_reg_loss_type("giou", "MODEL.X.BBOX_REG_LOSS_TYPE")
    IoUBalancedLoss().check_box_reg_loss_type("smooth_l1", "MODEL.X.BBOX_REG_LOSS_TYPE")
    IoUBalancedLoss(loc_enabled=False).check_box_reg_loss_type("giou", "MODEL.X")


def test_positive_iou_vector_scatters_the_positives_iou():
    positives = torch.tensor([[False, True, False], [True, False, True]])
    iou = IoUBalancedLoss.positive_iou_vector(torch.tensor([0.5, 0.25, 0.75]), positives)
    assert iou.dtype == torch.float32
    assert torch.equal(iou, torch.tensor([[0.0, 0.5, 0.0], [0.25, 0.0, 0.75]]))


def test_disabled_branches_are_the_plain_losses():
    logits, labels, pos, deltas, boxes, gt_boxes, gt_deltas = _samples()
    ib = IoUBalancedLoss(**DISABLED)
    assert ib.regressed_iou(CODER, deltas, boxes, gt_boxes) is None
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(ib.cross_entropy(logits, labels, pos, None,
                                                    reduction=reduction),
                                   F.cross_entropy(logits, labels, reduction=reduction),
                                   rtol=0, atol=0)
    targets = F.one_hot(labels, C + 1)[:, :-1].float()
    torch.testing.assert_close(
        ib.sigmoid_focal_loss(logits[:, :C], targets, pos, None, alpha=0.25, gamma=2.0),
        sigmoid_focal_loss_jit(logits[:, :C], targets, alpha=0.25, gamma=2.0, reduction="sum"),
        rtol=0, atol=0)
    torch.testing.assert_close(ib.localization(deltas, gt_deltas, None, beta=0.5),
                               smooth_l1_loss(deltas, gt_deltas, 0.5, reduction="sum"),
                               rtol=0, atol=0)


def test_enabled_branches_are_the_functions_of_losses_py():
    logits, labels, pos, deltas, boxes, gt_boxes, gt_deltas = _samples(seed=1)
    ib = IoUBalancedLoss(eta=1.3, lam=1.5, w_loc_mode="fixed", w_loc=2.4)
    pos_iou = ib.regressed_iou(CODER, deltas, boxes, gt_boxes)
    torch.testing.assert_close(pos_iou, regressed_iou(CODER, deltas, boxes, gt_boxes))
    assert 0 < pos_iou.min() and pos_iou.max() < 1  # the IoUs vary: the weights matter
    iou = torch.zeros(len(labels))
    iou[pos] = pos_iou
    for reduction in ("mean", "none"):
        torch.testing.assert_close(
            ib.cross_entropy(logits, labels, pos, pos_iou, reduction=reduction),
            iou_balanced_cross_entropy(logits, labels, iou, eta=1.3, reduction=reduction),
            rtol=0, atol=0)
    assert not torch.allclose(ib.cross_entropy(logits, labels, pos, pos_iou, reduction="none"),
                              F.cross_entropy(logits, labels, reduction="none"))
    targets = F.one_hot(labels, C + 1)[:, :-1].float()
    levels = torch.arange(len(labels)) % 3
    for groups in (None, levels):
        torch.testing.assert_close(
            ib.sigmoid_focal_loss(logits[:, :C], targets, pos, pos_iou, alpha=0.25, gamma=2.0,
                                  groups=groups),
            iou_balanced_sigmoid_focal_loss(logits[:, :C], targets, iou, eta=1.3, groups=groups),
            rtol=0, atol=0)
    torch.testing.assert_close(
        ib.localization(deltas, gt_deltas, pos_iou, beta=1.0),
        iou_balanced_smooth_l1_loss(deltas, gt_deltas, pos_iou, lam=1.5, beta=1.0, w_loc=2.4),
        rtol=0, atol=0)


@pytest.mark.parametrize("options", [DISABLED, dict(w_loc_mode="calibrate"),
                                     dict(w_loc_mode="normalized")])
def test_no_positives_give_finite_zero_losses_and_gradients(options):
    ib = IoUBalancedLoss(**options)
    empty = torch.zeros((0, 4))
    deltas = empty.clone().requires_grad_(True)
    logits = torch.randn(6, C + 1, requires_grad=True)
    background = torch.full((6,), C)
    none = torch.zeros(6, dtype=torch.bool)
    with EventStorage():
        pos_iou = ib.regressed_iou(CODER, deltas, empty, empty)
        loss_loc = ib.localization(deltas, empty, pos_iou, beta=1.0)
        loss_ce = ib.cross_entropy(logits, background, none, pos_iou)
        loss_focal = ib.sigmoid_focal_loss(logits[:, :C], torch.zeros(6, C), none, pos_iou,
                                           alpha=0.25, gamma=2.0)
        loss_empty = ib.cross_entropy(logits[:0], background[:0], none[:0], pos_iou)
    assert float(loss_loc) == 0.0 and float(loss_empty) == 0.0
    torch.testing.assert_close(loss_ce, F.cross_entropy(logits, background))  # negatives only
    for loss in (loss_loc, loss_ce, loss_focal, loss_empty):
        assert torch.isfinite(loss)
    (loss_loc + loss_ce + loss_focal + loss_empty).backward()
    assert torch.isfinite(logits.grad).all() and deltas.grad.shape == (0, 4)
    if options.get("w_loc_mode") == "calibrate":
        assert not ib.loc_weight.calibrated  # a zero-positive iteration defers calibration


def test_host_checkpoints_the_loc_weight_under_its_own_key():
    """The helper is not a module: its w_loc state is the host's ``loc_weight``."""
    head = IoUBalancedFastRCNNOutputLayers(
        ShapeSpec(channels=8), box2box_transform=CODER, num_classes=C, w_loc_mode="calibrate")
    assert head.loc_weight is head.iou_balanced.loc_weight
    assert set(head.state_dict()) == {"cls_score.weight", "cls_score.bias", "bbox_pred.weight",
                                      "bbox_pred.bias", "loc_weight.w_loc",
                                      "loc_weight.calibrated"}
