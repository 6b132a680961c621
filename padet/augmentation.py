"""SSD-style training augmentation for PADet, as detectron2 ``Augmentation``s (docs/padet_data.md).

PADet trains with "the SSD strategy" (paper §3.3 "Training"; Liu et al., SSD, ECCV 2016, §2.2
"Data augmentation"). The order of the default ``INPUT.PADET.AUG_STYLE`` "ssd" is

    photometric distortion -> expand (zoom out) -> min-IoU random crop -> horizontal flip -> resize

and ``AUG_STYLE`` "rfbnet" uses RFBNet's order: crop -> distortion -> expand (p 0.6) -> flip ->
resize. Each augmentation samples its parameters in ``get_transform`` and returns a deterministic
``Transform`` (detectron2 ``CropTransform``, ``HFlipTransform``, ``ResizeTransform`` and the
transforms below), so boxes are moved by detectron2's own machinery. Randomness comes from
numpy's global generator, like every detectron2 augmentation (seeded per data-loader worker).

The box-aware crop reads the boxes (``input_args = ("image", "boxes")``); detectron2's
``DatasetMapper`` passes augmentations only the image, hence ``PADetDatasetMapper``.
"""
import cv2
import numpy as np
import torch
from fvcore.transforms.transform import NoOpTransform, PadTransform, Transform

from detectron2.data import transforms as T
from detectron2.structures import Boxes, pairwise_iou

__all__ = [
    "PADetPhotometricTransform",
    "PADetPhotometricDistortion",
    "PADetExpandTransform",
    "PADetExpand",
    "PADetMinIoURandomCrop",
    "box_centers_inside",
    "build_padet_augmentation",
    "PADET_AUG_STYLES",
]

PADET_AUG_STYLES = ("ssd", "rfbnet")


def box_centers_inside(boxes: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Mask of the (N, 4) XYXY boxes whose centre lies strictly inside the rectangle (SSD's rule
    for which boxes a crop keeps)."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    return (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)


class PADetPhotometricTransform(Transform):
    """Fixed photometric distortion (SSD's): brightness shift, contrast scale, saturation scale and
    hue shift, with the contrast step before or after the HSV steps; the result is clipped to
    [0, 255] and returned as uint8. Neutral values (0 shift, scale 1) skip a step."""

    def __init__(
        self,
        brightness_delta: float = 0.0,
        contrast: float = 1.0,
        contrast_last: bool = False,
        saturation: float = 1.0,
        hue_delta: float = 0.0,
        image_format: str = "BGR",
    ):
        super().__init__()
        self._set_attributes(locals())

    def _apply_hsv(self, img: np.ndarray) -> np.ndarray:
        if self.saturation == 1.0 and self.hue_delta == 0.0:
            return img
        to_hsv, from_hsv = (
            (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR)
            if self.image_format == "BGR"
            else (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
        )
        # float32 HSV in OpenCV: H in degrees [0, 360), S in [0, 1], V in the input's range.
        hsv = cv2.cvtColor(np.clip(img, 0, 255), to_hsv)
        hsv[..., 1] = np.clip(hsv[..., 1] * self.saturation, 0.0, 1.0)
        hsv[..., 0] = np.mod(hsv[..., 0] + self.hue_delta, 360.0)
        return cv2.cvtColor(hsv, from_hsv)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        out = img.astype(np.float32)
        out += self.brightness_delta
        if not self.contrast_last:
            out *= self.contrast
        out = self._apply_hsv(out)
        if self.contrast_last:
            out *= self.contrast
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> Transform:
        return NoOpTransform()


class PADetPhotometricDistortion(T.Augmentation):
    """SSD photometric distortion (docs/padet_data.md, step 1): each step with probability ``prob``:
    brightness + U(-32, 32); contrast x U(0.5, 1.5), before or after the HSV steps (p 0.5);
    saturation x U(0.5, 1.5); hue + U(-18, 18) degrees."""

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range=(0.5, 1.5),
        saturation_range=(0.5, 1.5),
        hue_delta: float = 18.0,
        prob: float = 0.5,
        image_format: str = "BGR",
    ):
        super().__init__()
        if image_format not in ("BGR", "RGB"):
            raise ValueError(f"photometric distortion takes BGR or RGB, got {image_format!r}")
        self._init(locals())

    def _maybe(self, low: float, high: float, neutral: float) -> float:
        return float(self._rand_range(low, high)) if self._rand_range() < self.prob else neutral

    def get_transform(self, image) -> Transform:
        return PADetPhotometricTransform(
            brightness_delta=self._maybe(-self.brightness_delta, self.brightness_delta, 0.0),
            contrast=self._maybe(*self.contrast_range, 1.0),
            contrast_last=bool(self._rand_range() < 0.5),
            saturation=self._maybe(*self.saturation_range, 1.0),
            hue_delta=self._maybe(-self.hue_delta, self.hue_delta, 0.0),
            image_format=self.image_format,
        )


class PADetExpandTransform(PadTransform):
    """Zoom-out: place the image on a larger canvas filled with a per-channel value (the pixel
    mean). Boxes shift by (x0, y0); the inverse is the crop back (both from ``PadTransform``)."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        canvas = np.empty((h + self.y0 + self.y1, w + self.x0 + self.x1) + img.shape[2:], img.dtype)
        canvas[...] = np.asarray(self.pad_value, dtype=np.float64).astype(img.dtype)
        canvas[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = img
        return canvas


class PADetExpand(T.Augmentation):
    """SSD expand (docs/padet_data.md, step 2): with probability ``prob``, put the image at a
    uniformly random position on a canvas U(1, ``max_ratio``) times its size, filled with
    ``fill``."""

    def __init__(self, max_ratio: float = 4.0, fill=(104.0, 117.0, 123.0), prob: float = 0.5):
        super().__init__()
        if max_ratio < 1.0:
            raise ValueError(f"expand max_ratio must be >= 1, got {max_ratio}")
        self._init(locals())

    def get_transform(self, image) -> Transform:
        if self._rand_range() >= self.prob:
            return NoOpTransform()
        h, w = image.shape[:2]
        ratio = float(self._rand_range(1.0, self.max_ratio))
        new_w, new_h = int(w * ratio), int(h * ratio)
        left = int(self._rand_range(0, new_w - w))
        top = int(self._rand_range(0, new_h - h))
        fill = tuple(self.fill) if image.ndim == 3 else float(np.mean(self.fill))
        return PADetExpandTransform(
            left, top, new_w - w - left, new_h - h - top, orig_w=w, orig_h=h, pad_value=fill
        )


class PADetMinIoURandomCrop(T.Augmentation):
    """SSD's min-IoU crop sampler (docs/padet_data.md, step 3).

    Pick uniformly one choice among "keep the whole image" and each ``min_ious`` entry (0 = any
    crop). Then try up to ``max_trials`` crops with width and height U(``min_scale``, 1) times
    the image's and h/w within ``aspect_ratio_range``; accept the first whose IoU with *every*
    box reaches the threshold and which contains at least one box centre. All trials failing, or
    an image without boxes, gives no crop. Which boxes survive (centre inside the crop, then
    clipped) is decided by the mapper with ``box_centers_inside``.
    """

    input_args = ("image", "boxes")

    def __init__(
        self,
        min_ious=(0.0, 0.1, 0.3, 0.5, 0.7, 0.9),
        min_scale: float = 0.3,
        aspect_ratio_range=(0.5, 2.0),
        max_trials: int = 50,
    ):
        super().__init__()
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"crop min_scale must be in (0, 1], got {min_scale}")
        if any(not 0.0 <= t <= 1.0 for t in min_ious):
            raise ValueError(f"crop min IoUs must lie in [0, 1], got {list(min_ious)}")
        self._init(locals())

    def get_transform(self, image, boxes) -> Transform:
        if boxes is None:
            raise ValueError("PADetMinIoURandomCrop needs boxes: use T.AugInput(image, boxes=...)")
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        choice = np.random.randint(len(self.min_ious) + 1)
        if len(boxes) == 0 or choice == 0:
            return NoOpTransform()
        min_iou = self.min_ious[choice - 1]
        h, w = image.shape[:2]
        gt = Boxes(torch.as_tensor(boxes))
        for _ in range(self.max_trials):
            crop_w = float(self._rand_range(self.min_scale * w, w))
            crop_h = float(self._rand_range(self.min_scale * h, h))
            if not self.aspect_ratio_range[0] <= crop_h / crop_w <= self.aspect_ratio_range[1]:
                continue
            x0 = int(self._rand_range(0, w - crop_w))
            y0 = int(self._rand_range(0, h - crop_h))
            x1, y1 = max(x0 + int(crop_w), x0 + 1), max(y0 + int(crop_h), y0 + 1)
            rect = Boxes(torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32))
            if pairwise_iou(rect, gt).min().item() < min_iou:
                continue
            if not box_centers_inside(boxes, x0, y0, x1, y1).any():
                continue
            return T.CropTransform(x0, y0, x1 - x0, y1 - y0, orig_w=w, orig_h=h)
        return NoOpTransform()


def build_padet_augmentation(cfg, is_train: bool):
    """The PADet augmentation list from ``INPUT.PADET`` (docs/padet_data.md): the SSD pipeline
    in training, the square resize to ``MODEL.PADET.INPUT_SIZE`` alone in inference."""
    size = cfg.MODEL.PADET.INPUT_SIZE
    resize = T.Resize((size, size))
    if not is_train:
        return [resize]
    node = cfg.INPUT.PADET
    if node.AUG_STYLE not in PADET_AUG_STYLES:
        raise ValueError(
            f"INPUT.PADET.AUG_STYLE must be one of {PADET_AUG_STYLES}, got {node.AUG_STYLE!r}"
        )
    distort = []
    if node.PHOTOMETRIC:
        distort = [PADetPhotometricDistortion(image_format=cfg.INPUT.FORMAT)]
    crop = [PADetMinIoURandomCrop(min_ious=tuple(node.CROP_MIN_IOUS))]
    flip = T.RandomFlip(prob=0.5, horizontal=True, vertical=False)
    fill = tuple(cfg.MODEL.PIXEL_MEAN)
    if node.AUG_STYLE == "ssd":
        expand = [PADetExpand(node.EXPAND_MAX_RATIO, fill, prob=0.5)]
        return distort + expand + crop + [flip, resize]
    expand = [PADetExpand(node.EXPAND_MAX_RATIO, fill, prob=0.6)]
    return crop + distort + expand + [flip, resize]
