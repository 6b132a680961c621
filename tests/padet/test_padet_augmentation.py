"""SSD-style augmentations (padet/augmentation.py)."""
import numpy as np
import pytest
import torch
from fvcore.transforms.transform import NoOpTransform

from train_net import add_all_configs
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import Boxes, pairwise_iou

from padet.augmentation import (
    PADetExpand,
    PADetMinIoURandomCrop,
    PADetPhotometricDistortion,
    PADetPhotometricTransform,
    build_padet_augmentation,
)


def _random_boxes(rng, n, w, h):
    xy = rng.uniform(0, [w - 12, h - 12], size=(n, 2))
    wh = rng.uniform(8, [w / 2, h / 2], size=(n, 2))
    return np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1)


# ---------------------------------------------------------------- photometric distortion


def test_photometric_neutral_is_identity_and_brightness_contrast_formula():
    img = np.random.RandomState(0).randint(0, 256, size=(20, 30, 3)).astype(np.uint8)
    assert np.array_equal(PADetPhotometricTransform().apply_image(img), img)
    out = PADetPhotometricTransform(brightness_delta=10.0, contrast=1.5).apply_image(img)
    expected = np.clip(np.rint((img.astype(np.float32) + 10.0) * 1.5), 0, 255)
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    # contrast after the HSV steps: here the HSV steps are neutral, so the order does not matter
    # for brightness-then-contrast; contrast before brightness would differ.
    out_last = PADetPhotometricTransform(brightness_delta=10.0, contrast=1.5, contrast_last=True)
    assert np.array_equal(out_last.apply_image(img), expected)


def test_photometric_hue_and_saturation():
    red_bgr = np.zeros((4, 4, 3), np.uint8)
    red_bgr[..., 2] = 200
    green = PADetPhotometricTransform(hue_delta=120.0, image_format="BGR").apply_image(red_bgr)
    assert np.array_equal(green[0, 0], [0, 200, 0])  # red -> green, BGR order
    to_green_rgb = PADetPhotometricTransform(hue_delta=120.0, image_format="RGB")
    green_rgb = to_green_rgb.apply_image(red_bgr[..., ::-1])
    assert np.array_equal(green_rgb[0, 0], [0, 200, 0])  # RGB order
    gray = PADetPhotometricTransform(saturation=0.0).apply_image(red_bgr)
    assert np.all(gray == 200)  # no saturation: V on every channel
    more = PADetPhotometricTransform(saturation=1.5).apply_image(red_bgr)
    assert np.array_equal(more, red_bgr)  # saturation is clipped at 1


def test_photometric_distortion_sampling():
    img = np.full((8, 8, 3), 100, np.uint8)
    off = PADetPhotometricDistortion(prob=0.0).get_transform(img)
    assert np.array_equal(off.apply_image(img), img)
    np.random.seed(0)
    tfms = [PADetPhotometricDistortion().get_transform(img) for _ in range(400)]
    deltas = np.array([t.brightness_delta for t in tfms])
    contrasts = np.array([t.contrast for t in tfms])
    hues = np.array([t.hue_delta for t in tfms])
    ranges = [(deltas, 0, -32, 32), (contrasts, 1, 0.5, 1.5), (hues, 0, -18, 18)]
    for values, neutral, low, high in ranges:
        active = values[values != neutral]
        assert 0.4 < len(active) / len(values) < 0.6  # each step with p 0.5
        assert active.min() >= low and active.max() <= high
        assert active.min() < low + 0.2 * (high - low) and active.max() > high - 0.2 * (high - low)
    assert 0.4 < np.mean([t.contrast_last for t in tfms]) < 0.6
    with pytest.raises(ValueError, match="BGR or RGB"):
        PADetPhotometricDistortion(image_format="L")


# ---------------------------------------------------------------- expand


def test_expand_ratio_range_placement_fill_and_boxes():
    rng = np.random.RandomState(1)
    img = rng.randint(0, 256, size=(30, 40, 3)).astype(np.uint8)
    boxes = _random_boxes(rng, 5, 40, 30)
    fill = (10, 20, 30)
    aug = PADetExpand(max_ratio=4.0, fill=fill, prob=1.0)
    np.random.seed(0)
    ratios = []
    for _ in range(200):
        aug_input = T.AugInput(img.copy(), boxes=boxes.copy())
        tfm = aug(aug_input)
        out = aug_input.image
        h, w = out.shape[:2]
        assert 30 <= h <= 120 and 40 <= w <= 160
        ratios.append(w / 40)
        assert abs(h / 30 - w / 40) < 0.05  # the same ratio on both axes (up to int rounding)
        x0, y0 = tfm.x0, tfm.y0
        assert np.array_equal(out[y0 : y0 + 30, x0 : x0 + 40], img)
        canvas = out.copy()
        canvas[y0 : y0 + 30, x0 : x0 + 40] = fill
        assert np.all(canvas == np.array(fill, np.uint8))
        np.testing.assert_allclose(aug_input.boxes, boxes + [x0, y0, x0, y0])  # every box kept
    assert min(ratios) < 1.2 and max(ratios) > 3.7
    assert isinstance(PADetExpand(prob=0.0).get_transform(img), NoOpTransform)
    with pytest.raises(ValueError, match="max_ratio"):
        PADetExpand(max_ratio=0.5)


# ---------------------------------------------------------------- min-IoU crop


@pytest.mark.parametrize("min_iou", [0.1, 0.5, 0.7, 0.9])
def test_crop_respects_min_iou_scale_and_aspect(min_iou):
    rng = np.random.RandomState(2)
    img = np.zeros((100, 150, 3), np.uint8)
    aug = PADetMinIoURandomCrop(min_ious=(min_iou,))
    np.random.seed(3)
    num_crops = 0
    for _ in range(150):
        # Large boxes, so that high thresholds are reachable; two boxes only for low ones.
        wh = rng.uniform(0.4, 1.0, size=(1 if min_iou > 0.3 else 2, 2)) * [150, 100]
        xy = rng.uniform(0, 1, size=wh.shape) * ([150, 100] - wh)
        boxes = np.concatenate([xy, xy + wh], axis=1)
        tfm = aug.get_transform(img, boxes)
        if isinstance(tfm, NoOpTransform):
            continue
        num_crops += 1
        assert isinstance(tfm, T.CropTransform)
        rect = torch.tensor([[tfm.x0, tfm.y0, tfm.x0 + tfm.w, tfm.y0 + tfm.h]], dtype=torch.float32)
        assert pairwise_iou(Boxes(rect), Boxes(torch.as_tensor(boxes))).min() >= min_iou
        assert 0 <= tfm.x0 and tfm.x0 + tfm.w <= 150 and 0 <= tfm.y0 and tfm.y0 + tfm.h <= 100
        assert tfm.w >= 0.3 * 150 - 1 and tfm.h >= 0.3 * 100 - 1
        assert 0.5 - 0.05 <= tfm.h / tfm.w <= 2.0 + 0.05
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        assert np.any((centers[:, 0] > tfm.x0) & (centers[:, 0] < tfm.x0 + tfm.w)
                      & (centers[:, 1] > tfm.y0) & (centers[:, 1] < tfm.y0 + tfm.h))
    # The sampler does crop (half of the draws pick "no crop"; IoU 0.9 is rarely reachable).
    assert num_crops >= (1 if min_iou >= 0.9 else 10)


def test_crop_mode_choice_and_no_boxes():
    img = np.zeros((100, 100, 3), np.uint8)
    boxes = np.array([[10.0, 10.0, 90.0, 90.0]])
    np.random.seed(0)
    aug = PADetMinIoURandomCrop()  # 7 choices: no crop + min IoU 0 (any), 0.1, ..., 0.9
    draws = [aug.get_transform(img, boxes) for _ in range(700)]
    no_crop = np.mean([isinstance(t, NoOpTransform) for t in draws])
    assert 0.1 < no_crop < 0.3  # "no crop" is 1 of 7 choices (+ rare failed trials)
    assert isinstance(aug.get_transform(img, np.zeros((0, 4))), NoOpTransform)
    with pytest.raises(ValueError, match="boxes"):
        aug(T.AugInput(img))
    with pytest.raises(ValueError, match="min IoUs"):
        PADetMinIoURandomCrop(min_ious=(1.5,))


# ---------------------------------------------------------------- pipeline from the config


def _cfg(**padet):
    """Each key set in the node that holds it: INPUT.PADET (augmentation) or MODEL.PADET."""
    cfg = get_cfg()
    add_all_configs(cfg)
    for key, value in padet.items():
        setattr(cfg.INPUT.PADET if key in cfg.INPUT.PADET else cfg.MODEL.PADET, key, value)
    return cfg


def test_build_augmentation_order_and_styles():
    names = lambda augs: [type(a).__name__ for a in augs]  # noqa: E731
    ssd = build_padet_augmentation(_cfg(), True)
    assert names(ssd) == [
        "PADetPhotometricDistortion", "PADetExpand", "PADetMinIoURandomCrop", "RandomFlip", "Resize"
    ]
    assert ssd[1].prob == 0.5 and ssd[1].fill == tuple(get_cfg().MODEL.PIXEL_MEAN)
    assert ssd[-1].shape == (384, 384)
    rfb_cfg = _cfg(AUG_STYLE="rfbnet", PHOTOMETRIC=False, INPUT_SIZE=512)
    rfb = build_padet_augmentation(rfb_cfg, True)
    assert names(rfb) == ["PADetMinIoURandomCrop", "PADetExpand", "RandomFlip", "Resize"]
    assert rfb[1].prob == 0.6 and rfb[-1].shape == (512, 512)
    assert names(build_padet_augmentation(_cfg(), False)) == ["Resize"]
    with pytest.raises(ValueError, match="AUG_STYLE"):
        build_padet_augmentation(_cfg(AUG_STYLE="yolo"), True)


def test_flip_only_settings_leave_only_the_flip_and_the_resize():
    """The shapes config's settings (configs/shapes/padet_vgg16_0.25x_256_flip_2600it.yaml):
    no photometric distortion, expand ratio 1, no crop choice. Every sample is the resized image,
    flipped or not, with its boxes moved the same way."""
    cfg = _cfg(PHOTOMETRIC=False, EXPAND_MAX_RATIO=1.0, CROP_MIN_IOUS=[], INPUT_SIZE=256)
    augs = T.AugmentationList(build_padet_augmentation(cfg, True))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 150, 3)).astype(np.uint8)
    boxes = _random_boxes(rng, 3, 150, 100)
    resize = T.ResizeTransform(100, 150, 256, 256)
    flip = T.HFlipTransform(150)
    expected = {
        False: (resize.apply_image(image), resize.apply_box(boxes)),
        True: (resize.apply_image(flip.apply_image(image)), resize.apply_box(flip.apply_box(boxes))),
    }
    seen = set()
    for _ in range(16):
        aug_input = T.AugInput(image.copy(), boxes=boxes.copy())
        augs(aug_input)
        flipped = not np.array_equal(aug_input.image, expected[False][0])
        assert np.array_equal(aug_input.image, expected[flipped][0])
        np.testing.assert_allclose(aug_input.boxes, expected[flipped][1], atol=1e-4)
        seen.add(flipped)
    assert seen == {False, True}
