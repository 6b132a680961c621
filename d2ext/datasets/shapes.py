"""The embedded "shapes" detection dataset: a seeded generator of COCO-format data.

Images hold filled geometric shapes of five classes (each with its own hue band) with widely
varied sizes (down to 10 pixels), aspect ratios and rotations, overlapping and occluding each
other, on a gradient background with noise and clutter (lines, dots, rings, which are not
objects). Shapes are drawn anti-aliased with sub-pixel vertices, so a box is only right to a
pixel when the detector localizes well: AP75 and AP90 are hard.

Annotations follow COCO: ``bbox`` is the tight box of the object's *visible* pixels
(XYWH, integer pixel edges), ``area`` its visible pixel count. Every annotated object keeps
at least ``MIN_VISIBLE_FRACTION`` of its pixels visible.

A split is written on first use under ``$SHAPES_DATASET_DIR`` (default
``$DETECTRON2_DATASETS/shapes``, i.e. ``datasets/shapes``) as ``<split>/*.jpg`` (JPEG quality
95) plus ``<split>.json``; ``shapes_train`` and ``shapes_val`` are registered at import time.
The same seed gives byte-identical images and json.
"""
import cv2
import numpy as np

from .synthetic import SyntheticDataset

__all__ = ["SHAPES_CLASSES", "SHAPES_SPLITS", "generate_shapes_split", "register_shapes_split"]

SHAPES_CLASSES = ("rectangle", "ellipse", "triangle", "cross", "star")
SHAPES_COLORS = [(220, 20, 60), (0, 130, 200), (60, 180, 75), (245, 130, 48), (145, 30, 180)]
# name -> (number of images, seed)
SHAPES_SPLITS = {"shapes_train": (2000, 0), "shapes_val": (300, 1)}

GENERATOR_VERSION = 5
IMAGE_SIZE_RANGE = (128, 192)  # height and width drawn independently, pixels
OBJECTS_PER_IMAGE = (2, 10)
OBJECT_SIZE_RANGE = (10.0, 120.0)  # geometric mean of w and h, log-uniform
ASPECT_RATIO_RANGE = (1 / 3, 3.0)  # w / h, log-uniform
MIN_VISIBLE_FRACTION = 0.5
MIN_VISIBLE_PIXELS = 16
MIN_CONTRAST = 150  # L1 distance in RGB between an object and the background under it
_SUBPIXEL_BITS = 4  # cv2 polygon vertices at 1/16 pixel


def _unit_polygon(cls_name, rng):
    """Vertices of a shape in a [-1, 1] box, before scaling and rotation."""
    if cls_name == "rectangle":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    if cls_name == "ellipse":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    if cls_name == "triangle":
        apex = rng.uniform(-1, 1)
        return np.array([[apex, -1], [1, 1], [-1, 1]], dtype=np.float64)
    if cls_name == "cross":
        a = rng.uniform(0.25, 0.5)  # half arm thickness
        return np.array(
            [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a],
             [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]], dtype=np.float64
        )
    if cls_name == "star":
        inner = rng.uniform(0.35, 0.55)
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    raise ValueError(f"unknown shape class {cls_name!r}")


def _sample_polygon(cls_name, height, width, rng):
    """A shape's image-frame polygon: log-uniform size and aspect ratio, random placement."""
    size = np.exp(rng.uniform(*np.log(OBJECT_SIZE_RANGE)))
    size = min(size, 0.6 * min(height, width))
    aspect = np.exp(rng.uniform(*np.log(ASPECT_RATIO_RANGE)))
    half_w, half_h = size * np.sqrt(aspect) / 2, size / np.sqrt(aspect) / 2
    pts = _unit_polygon(cls_name, rng) * [half_w, half_h]
    if cls_name in ("triangle", "star", "ellipse"):
        theta = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        pts = pts @ rot.T
    # Centres may lie slightly outside the image: some objects are truncated by the border.
    cx = rng.uniform(-0.1 * half_w, width + 0.1 * half_w)
    cy = rng.uniform(-0.1 * half_h, height + 0.1 * half_h)
    return pts + [cx, cy]


def _object_color(cls_idx, rng):
    """An RGB colour from the class's hue band (+-10 degrees) with random saturation and value."""
    hue = (cls_idx * 180 / len(SHAPES_CLASSES) + rng.uniform(-5, 5)) % 180  # OpenCV hue: 0-180
    hsv = np.array([[[hue, rng.uniform(170, 255), rng.uniform(120, 255)]]], dtype=np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.int64)


def _fill(canvas, polygon, color, antialiased):
    pts = np.round(polygon * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    line_type = cv2.LINE_AA if antialiased else cv2.LINE_8
    cv2.fillPoly(canvas, [pts], color, lineType=line_type, shift=_SUBPIXEL_BITS)


def _background(height, width, rng):
    """A linear colour gradient in a random direction, plus Gaussian noise."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)
    t = (np.arange(width, dtype=np.float32)[None, :] * direction[0]
         + np.arange(height, dtype=np.float32)[:, None] * direction[1])
    t = (t - t.min()) / max(t.max() - t.min(), 1.0)
    image = c0 + t[..., None] * (c1 - c0)
    image += 8 * rng.standard_normal(size=image.shape, dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _clutter(image, rng, num_lines, num_dots, num_rings):
    """Lines, dots and rings: structure that is not an object of any class."""
    height, width = image.shape[:2]
    for _ in range(num_lines):
        p0 = tuple(int(v) for v in rng.integers(0, [width, height]))
        p1 = tuple(int(v) for v in rng.integers(0, [width, height]))
        color = tuple(int(v) for v in rng.integers(0, 256, size=3))
        cv2.line(image, p0, p1, color, int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(num_dots):
        center = tuple(int(v) for v in rng.integers(0, [width, height]))
        color = tuple(int(v) for v in rng.integers(0, 256, size=3))
        cv2.circle(image, center, int(rng.integers(1, 4)), color, -1, cv2.LINE_AA)
    for _ in range(num_rings):
        center = tuple(int(v) for v in rng.integers(0, [width, height]))
        color = tuple(int(v) for v in rng.integers(0, 256, size=3))
        cv2.circle(image, center, int(rng.integers(4, 30)), color, 1, cv2.LINE_AA)


def _render_image(rng):
    """One image (RGB uint8) and its annotations (category index, XYWH box, visible area)."""
    height, width = (int(v) for v in rng.integers(IMAGE_SIZE_RANGE[0], IMAGE_SIZE_RANGE[1] + 1, 2))
    image = _background(height, width, rng)
    _clutter(image, rng, *rng.integers(0, [5, 12, 4]))
    # label[y, x] = index of the object visible at that pixel, -1 for background
    label = np.full((height, width), -1, dtype=np.int16)
    categories, full_area, visible_area = [], [], []
    for _ in range(int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))):
        for _attempt in range(10):
            cls_idx = int(rng.integers(len(SHAPES_CLASSES)))
            polygon = _sample_polygon(SHAPES_CLASSES[cls_idx], height, width, rng)
            # work inside the polygon's bounding window only
            x0, y0 = np.clip(np.floor(polygon.min(axis=0)).astype(int), 0, [width, height])
            x1, y1 = np.clip(np.ceil(polygon.max(axis=0)).astype(int) + 1, 0, [width, height])
            mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
            _fill(mask, polygon - [x0, y0], 1, antialiased=False)
            mask = mask.astype(bool)
            area = int(mask.sum())
            if area < MIN_VISIBLE_PIXELS:
                continue
            window = label[y0:y1, x0:x1]
            hidden = np.bincount(window[mask] + 1, minlength=len(categories) + 1)[1:]
            remaining = np.array(visible_area, dtype=np.int64) - hidden
            if (remaining < MIN_VISIBLE_FRACTION * np.array(full_area)).any():
                continue  # it would hide too much of an earlier object
            under = image[y0:y1, x0:x1][mask].mean(axis=0)
            for _ in range(20):
                color = _object_color(cls_idx, rng)
                if np.abs(color - under).sum() >= MIN_CONTRAST:
                    break
            _fill(image, polygon, tuple(int(c) for c in color), antialiased=True)
            window[mask] = len(categories)
            visible_area = list(remaining) + [area]
            full_area.append(area)
            categories.append(cls_idx)
            break
    _clutter(image, rng, *rng.integers(0, [2, 6, 1]))  # clutter over the objects too
    annotations = []
    for idx, cls_idx in enumerate(categories):
        ys, xs = np.nonzero(label == idx)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        bbox = [int(x0), int(y0), int(x1 - x0), int(y1 - y0)]
        annotations.append((cls_idx, bbox, int(len(xs))))
    return image, annotations


SHAPES = SyntheticDataset("shapes", SHAPES_CLASSES, SHAPES_COLORS, GENERATOR_VERSION,
                          _render_image)


def generate_shapes_split(root, split, num_images, seed):
    """Write ``root/<split>/*.jpg`` and ``root/<split>.json`` (COCO format); returns the json.

    The output is a pure function of (seed, num_images, GENERATOR_VERSION)
    (``d2ext.datasets.synthetic``).
    """
    return SHAPES.generate(root, split, num_images, seed)


def register_shapes_split(name, num_images, seed, root=None):
    """Register a shapes split under ``name``; its files are generated on first load."""
    SHAPES.register(name, num_images, seed, root)


for _name, (_num_images, _seed) in SHAPES_SPLITS.items():
    register_shapes_split(_name, _num_images, _seed)
