"""Feature Alignment Module (paper §3.2, Fig. 5) for every Table 1 offset option."""
import pytest
import torch
import torch.nn.functional as F

from padet.fam import FAM_MODES, FeatureAlignmentModule

A, C, H, W = 6, 4, 9, 10


def _fam(mode, **kw):
    torch.manual_seed(0)
    return FeatureAlignmentModule(C, A, mode=mode, norm="", **kw).eval()


def _inputs():
    torch.manual_seed(1)
    return torch.randn(2, C, H, W), torch.randn(2, 4 * A, H, W)


@pytest.mark.parametrize("mode", [m for m in FAM_MODES if m != "none"])
def test_offsets_have_2k_channels_and_start_as_a_regular_conv(mode):
    fam = _fam(mode)
    h, deltas = _inputs()
    off = fam.offsets(h, deltas)
    assert off.shape == (2, 18, H, W)
    assert torch.count_nonzero(off) == 0  # zero-initialised offset convs
    regular = F.relu(F.conv2d(h, fam.weight, padding=1))
    assert torch.allclose(fam(h, deltas), regular, atol=1e-5)


def test_none_is_identity_without_parameters():
    fam = _fam("none")
    h, deltas = _inputs()
    assert fam(h, deltas) is h and not list(fam.parameters())


def test_disentangled_shift_is_shared_by_all_kernel_points():
    fam = _fam("disentangled")
    torch.nn.init.normal_(fam.shift_conv.weight)
    torch.nn.init.normal_(fam.shift_conv.bias)
    h, deltas = _inputs()
    off = fam.offsets(h, deltas)  # conv_s (offset_conv) is still zero
    c = fam.shift_conv(fam.split_deltas(deltas)[0])
    assert torch.allclose(off.view(2, 9, 2, H, W), c[:, None].expand(2, 9, 2, H, W))
    # with a residual, offsets = ds + c repeated; ds depends on X_s only, c on X_l only
    torch.nn.init.normal_(fam.offset_conv.weight)
    x_l, x_s = fam.split_deltas(deltas)
    expected = fam.offset_conv(x_s) + fam.shift_conv(x_l).repeat(1, 9, 1, 1)
    assert torch.allclose(fam.offsets(h, deltas), expected)


def test_split_of_apm_deltas_into_location_and_shape():
    fam = _fam("disentangled")
    deltas = torch.arange(2 * 4 * A * H * W, dtype=torch.float32).view(2, 4 * A, H, W)
    x_l, x_s = fam.split_deltas(deltas)
    assert x_l.shape == x_s.shape == (2, 2 * A, H, W)
    a = 3  # anchor 3's (dx, dy) are channels 12, 13; its (dw, dh) 14, 15
    assert torch.equal(x_l[:, 2 * a:2 * a + 2], deltas[:, 4 * a:4 * a + 2])
    assert torch.equal(x_s[:, 2 * a:2 * a + 2], deltas[:, 4 * a + 2:4 * a + 4])
    assert not fam.split_deltas(deltas.requires_grad_())[0].requires_grad  # FAM_DETACH


@pytest.mark.parametrize("mode,changes_with", [
    ("loc", "x_l"), ("shape", "x_s"), ("concat", "both"), ("implicit", "h")])
def test_each_option_reads_its_own_source(mode, changes_with):
    fam = _fam(mode)
    torch.nn.init.normal_(fam.offset_conv.weight)
    h, deltas = _inputs()
    base = fam.offsets(h, deltas)
    d = deltas.view(2, A, 4, H, W)
    moved_l = (d + torch.tensor([1.0, 1, 0, 0]).view(1, 1, 4, 1, 1)).view_as(deltas)
    moved_s = (d + torch.tensor([0.0, 0, 1, 1]).view(1, 1, 4, 1, 1)).view_as(deltas)
    l_changes = not torch.allclose(fam.offsets(h, moved_l), base)
    s_changes = not torch.allclose(fam.offsets(h, moved_s), base)
    h_changes = not torch.allclose(fam.offsets(h + 1, deltas), base)
    assert (l_changes, s_changes, h_changes) == {
        "x_l": (True, False, False), "x_s": (False, True, False),
        "both": (True, True, False), "h": (False, False, True)}[changes_with]


def test_integer_shift_samples_the_shifted_input():
    fam = _fam("disentangled")
    with torch.no_grad():
        fam.shift_conv.bias.copy_(torch.tensor([1.0, 2.0]))  # c = (dy, dx) = (1, 2)
    h, deltas = _inputs()
    y = fam(h, deltas)
    shifted = torch.roll(h, shifts=(-1, -2), dims=(2, 3))  # h[y + 1, x + 2]
    expected = F.relu(F.conv2d(shifted, fam.weight, padding=1))
    # away from the borders the rolled input equals the shifted sampling
    assert torch.allclose(y[:, :, 1:H - 3, 1:W - 4], expected[:, :, 1:H - 3, 1:W - 4], atol=1e-5)


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="FAM_MODE"):
        FeatureAlignmentModule(C, A, mode="deformable")
