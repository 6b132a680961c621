"""Interval-weighted regression loss (paper Eq. 2) and IoU loss (paper §3.1-3.2)."""
import pytest
import torch
from torch.nn import functional as F

from iou_uniform.losses import interval_weighted_reg_loss, interval_weights, iou_prediction_loss

B = (0.5, 0.6, 0.7, 0.8, 1.0)


def test_interval_weights_bins():
    t = torch.tensor([0.55, 0.6, 0.6001, 0.65, 0.75, 0.85, 0.95])
    w = interval_weights(t, B, (1.0, 1.5, 3.0, 3.0))
    assert w.tolist() == [1.0, 1.0, 1.5, 1.5, 3.0, 3.0, 3.0]
    assert interval_weights(torch.tensor([0.75]), B, (1.0, 1.5, 2.0, 3.0)).item() == 2.0
    with pytest.raises(ValueError, match="3 regression interval weights for 4"):
        interval_weights(t, B, (1.0, 1.5, 3.0))


def test_reg_loss_is_weighted_sum_over_4n():
    torch.manual_seed(0)
    pred, gt = torch.randn(6, 4) * 2, torch.randn(6, 4)
    t = torch.tensor([0.55, 0.65, 0.75, 0.85, 0.95, 0.6])
    w = torch.tensor([1.0, 1.5, 3.0, 3.0, 3.0, 1.0])
    expected = (F.smooth_l1_loss(pred, gt, reduction="none", beta=1.0) * w[:, None]).sum() / 24
    got = interval_weighted_reg_loss(pred, gt, t, B, (1.0, 1.5, 3.0, 3.0), 1.0)
    assert torch.allclose(got, expected)
    unweighted = interval_weighted_reg_loss(pred, gt, t, B, (1.0, 1.0, 1.0, 1.0), 1.0)
    assert torch.allclose(unweighted, F.smooth_l1_loss(pred, gt, beta=1.0))


def test_iou_loss_is_squared_error_below_beta():
    u = torch.tensor([0.2, 0.9, 0.7, 0.5])
    t = torch.tensor([0.55, 0.6, 0.95, 0.51])
    assert torch.allclose(iou_prediction_loss(u, t, 0.5), ((u - t) ** 2).mean())


def test_empty_losses_are_connected_zeros():
    pred = torch.zeros(0, 4, requires_grad=True)
    u = torch.zeros(0, requires_grad=True)
    reg = interval_weighted_reg_loss(pred, pred.detach(), u.detach(), B, (1, 1.5, 3, 3), 1.0)
    iou = iou_prediction_loss(u, u.detach(), 0.5)
    assert reg.item() == 0 and iou.item() == 0
    (reg + iou).backward()
    assert pred.grad is not None and u.grad is not None
