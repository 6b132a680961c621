"""SSD anchors of PADet (paper §3, "Anchor Design and Matching": counts and shapes) and the box
coder (SSD's variances 0.1, 0.2)."""
import math

import pytest
import torch

from train_net import load_config
from detectron2.modeling.box_regression import Box2BoxTransform
from padet.anchors import SSDAnchorGenerator, flatten_anchor_maps
from padet.apm import build_padet_anchor_generator
from tests.conftest import config_path

MAPS = {384: [48, 24, 12, 6, 3, 1], 512: [64, 32, 16, 8, 4, 1]}


def _generator(size):
    cfg = load_config(config_path("padet", "padet_vgg16_384.yaml"),
                      ["MODEL.PADET.INPUT_SIZE", str(size)])
    return build_padet_anchor_generator(cfg)


@pytest.mark.parametrize("size,total,per_level", [
    (384, 18400, [13824, 3456, 864, 216, 36, 4]),
    (512, 32708, [24576, 6144, 1536, 384, 64, 4]),
])
def test_anchor_counts(size, total, per_level):
    gen = _generator(size)
    assert gen.num_anchors == [6, 6, 6, 6, 4, 4]
    anchors = gen([(m, m) for m in MAPS[size]], (size, size))
    assert anchors.shape == (total, 4)  # paper §3.1: "the total anchors are 18400" at 384
    assert [m * m * a for m, a in zip(MAPS[size], gen.num_anchors)] == per_level


def test_first_d1_anchors_at_384():
    gen = SSDAnchorGenerator(input_size=384,
                             size_fractions=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
                             aspect_ratios=[[2, 3]] * 4 + [[2]] * 2, clip=False)
    anchors = gen([(m, m) for m in MAPS[384]], (384, 384))
    first = anchors[:6]
    centres = (first[:, :2] + first[:, 2:]) / 2
    wh = first[:, 2:] - first[:, :2]
    assert torch.allclose(centres, torch.tensor(4.0).expand(6, 2))
    expected = [(26.88, 26.88), (39.35, 39.35), (38.01, 19.01), (19.01, 38.01),
                (46.56, 15.52), (15.52, 46.56)]
    assert torch.allclose(wh, torch.tensor(expected), atol=0.01)
    # next location along x, then the next row; D2 starts after 48*48*6 anchors at step 16
    assert torch.allclose((anchors[6, :2] + anchors[6, 2:]) / 2, torch.tensor([12.0, 4.0]))
    assert torch.allclose((anchors[48 * 6, :2] + anchors[48 * 6, 2:]) / 2,
                          torch.tensor([4.0, 12.0]))
    d2 = anchors[13824]
    assert torch.allclose((d2[:2] + d2[2:]) / 2, torch.tensor([8.0, 8.0]))
    assert torch.allclose(d2[2:] - d2[:2], torch.tensor([57.6, 57.6]))
    # the D6 square anchors: s_6 and sqrt(s_6 * s_7)
    assert torch.allclose(anchors[-4, 2:] - anchors[-4, :2], torch.tensor([334.08, 334.08]))
    assert torch.allclose(anchors[-3, 2:] - anchors[-3, :2],
                          torch.tensor(math.sqrt(334.08 * 403.2)).expand(2))


def test_clipped_to_image_and_cached():
    gen = _generator(384)
    anchors = gen([(m, m) for m in MAPS[384]], (384, 384))
    assert anchors.min() >= 0 and anchors.max() <= 384
    assert gen([(m, m) for m in MAPS[384]], (384, 384)) is anchors


def test_flatten_order_matches_anchor_order():
    """A map (N, A*k, H, W) flattens to (level, y, x, anchor): entry (y, x, a) lands at
    (y * W + x) * A + a."""
    a, k, h, w = 3, 4, 2, 5
    maps = torch.arange(a * k * h * w, dtype=torch.float32).view(1, a * k, h, w)
    flat = flatten_anchor_maps([maps], k)
    y, x, anchor = 1, 3, 2
    assert torch.equal(flat[0, (y * w + x) * a + anchor],
                       maps[0, anchor * k:(anchor + 1) * k, y, x])


def test_wrong_fraction_count_is_a_clear_error():
    with pytest.raises(ValueError, match="ANCHOR_SIZE_FRACTIONS"):
        SSDAnchorGenerator(input_size=384, size_fractions=[0.1, 0.2], aspect_ratios=[[2]] * 2)


def test_box_coder_is_ssd_with_variances():
    coder = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
    anchors = torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 30.0, 10.0]])
    gt = torch.tensor([[12.0, 18.0, 60.0, 70.0], [5.0, 1.0, 20.0, 12.0]])
    d = coder.get_deltas(anchors, gt)
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    gx, gy = gt[:, 0] + gw / 2, gt[:, 1] + gh / 2
    ssd = torch.stack([(gx - ax) / (0.1 * aw), (gy - ay) / (0.1 * ah),
                       torch.log(gw / aw) / 0.2, torch.log(gh / ah) / 0.2], dim=1)
    assert torch.allclose(d, ssd)
    assert torch.allclose(coder.apply_deltas(d, anchors), gt, atol=1e-4)
