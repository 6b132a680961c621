"""The embedded "primitives" detection dataset: a seeded generator of easy-to-localize objects.

A regime beside ``shapes`` in which a Faster R-CNN baseline already localizes well (high AP at
IoU 0.9): 256x256 images hold 1 to 5 axis-aligned filled rectangles, ellipses and triangles,
16 to 96 px wide and high (aspect ratio at most 2), each of one flat random colour, on a flat
random background colour; Gaussian noise covers the whole image. There is no occlusion and no
clutter: boxes never overlap (they stay ``MIN_GAP`` pixels apart), so every object is a
separate region. The noise is bounded (``NOISE_CLIP``) and every object's colour differs from
the background by more than twice that bound in at least one channel, so no background pixel
takes an object's colour or the reverse: the objects are the only distinct regions.

Objects are rasterized without anti-aliasing into a mask, and ``bbox`` is the tight box of the
mask's pixels (XYWH, integer pixel edges), ``area`` its pixel count: the annotation is exact for
the image as drawn (JPEG compression blurs the edges slightly, not the annotation).

Splits are written on first use under ``$PRIMITIVES_DATASET_DIR`` (default
``$DETECTRON2_DATASETS/primitives``) as ``<split>/*.jpg`` plus ``<split>.json``
(``d2ext.datasets.synthetic``); ``primitives_train`` and ``primitives_val`` are registered at
import time. The same seed gives byte-identical images and json.
"""
import cv2
import numpy as np

from .synthetic import SyntheticDataset

__all__ = [
    "PRIMITIVES_CLASSES", "PRIMITIVES_SPLITS", "generate_primitives_split",
    "register_primitives_split", "render_primitives_image",
]

PRIMITIVES_CLASSES = ("rectangle", "ellipse", "triangle")
PRIMITIVES_COLORS = [(220, 20, 60), (0, 130, 200), (60, 180, 75)]  # as shapes' same classes
# name -> (number of images, seed)
PRIMITIVES_SPLITS = {"primitives_train": (600, 0), "primitives_val": (150, 1)}

GENERATOR_VERSION = 1
IMAGE_SIZE = 256
OBJECTS_PER_IMAGE = (1, 5)
OBJECT_SIZE_RANGE = (16, 96)  # width and height each, pixels
MAX_ASPECT_RATIO = 2.0  # max(w, h) / min(w, h)
MIN_GAP = 2  # pixels of background between two objects' boxes
PLACEMENT_ATTEMPTS = 50  # positions tried for an object before it is left out
NOISE_STD = 8.0
NOISE_CLIP = 20.0  # the noise is clipped to +-NOISE_CLIP
MIN_CONTRAST = 96  # max over RGB channels of |object - background|; > 2 * NOISE_CLIP


def _sample_size(rng):
    """Width and height, each uniform in OBJECT_SIZE_RANGE, within MAX_ASPECT_RATIO."""
    while True:
        w, h = (int(v) for v in rng.integers(OBJECT_SIZE_RANGE[0], OBJECT_SIZE_RANGE[1] + 1, 2))
        if max(w, h) <= MAX_ASPECT_RATIO * min(w, h):
            return w, h


def _object_mask(cls_name, w, h, rng):
    """The object's pixels in its ``h x w`` box (bool); it reaches all four sides of the box."""
    if cls_name == "rectangle":
        return np.ones((h, w), dtype=bool)
    if cls_name == "ellipse":
        # pixel centres inside the ellipse inscribed in the box; the middle row and column
        # reach the box's edges for the sizes drawn here
        x = (np.arange(w) - (w - 1) / 2) / (w / 2)
        y = (np.arange(h) - (h - 1) / 2) / (h / 2)
        return x[None, :] ** 2 + y[:, None] ** 2 <= 1
    if cls_name == "triangle":
        # one side along a side of the box, the opposite corner anywhere on the opposite side;
        # integer vertices, which cv2 fills inclusively
        if rng.random() < 0.5:
            vertices = [(int(rng.integers(w)), 0), (0, h - 1), (w - 1, h - 1)]
        else:
            vertices = [(0, int(rng.integers(h))), (w - 1, 0), (w - 1, h - 1)]
        mask = np.zeros((h, w), dtype=np.uint8)
        cv2.fillPoly(mask, [np.array(vertices, dtype=np.int32)], 1, lineType=cv2.LINE_8)
        if rng.random() < 0.5:
            mask = mask[::-1, ::-1]  # the side on the top or on the left instead
        return mask.astype(bool)
    raise ValueError(f"unknown primitives class {cls_name!r}")


def _contrasting_color(background, rng):
    """A uniformly random RGB colour at least MIN_CONTRAST from ``background`` in a channel."""
    while True:
        color = rng.integers(0, 256, size=3)
        if np.abs(color - background).max() >= MIN_CONTRAST:
            return color


def _place(w, h, boxes, rng):
    """A top-left corner at which a ``w x h`` box keeps MIN_GAP from ``boxes``, or None."""
    for _ in range(PLACEMENT_ATTEMPTS):
        x, y = (int(v) for v in rng.integers(0, [IMAGE_SIZE - w + 1, IMAGE_SIZE - h + 1]))
        if all(x >= bx + bw + MIN_GAP or bx >= x + w + MIN_GAP
               or y >= by + bh + MIN_GAP or by >= y + h + MIN_GAP
               for bx, by, bw, bh in boxes):
            return x, y
    return None


def render_primitives_image(rng):
    """One image (RGB uint8) and its objects (category index, XYWH box, area), before JPEG.

    Image ``i`` of a split is ``render_primitives_image(np.random.default_rng([seed, i]))``.
    """
    background = rng.integers(0, 256, size=3)
    canvas = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.int64)
    canvas[:] = background
    objects = []
    for _ in range(int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))):
        cls_idx = int(rng.integers(len(PRIMITIVES_CLASSES)))
        w, h = _sample_size(rng)
        corner = _place(w, h, [bbox for _, bbox, _ in objects], rng)
        if corner is None:
            continue  # no room left for this object
        x, y = corner
        mask = _object_mask(PRIMITIVES_CLASSES[cls_idx], w, h, rng)
        canvas[y:y + h, x:x + w][mask] = _contrasting_color(background, rng)
        ys, xs = np.nonzero(mask)
        bbox = [x + int(xs.min()), y + int(ys.min()),
                int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        objects.append((cls_idx, bbox, int(mask.sum())))
    noise = np.clip(NOISE_STD * rng.standard_normal(canvas.shape), -NOISE_CLIP, NOISE_CLIP)
    image = np.clip(np.round(canvas + noise), 0, 255).astype(np.uint8)
    return image, objects


PRIMITIVES = SyntheticDataset("primitives", PRIMITIVES_CLASSES, PRIMITIVES_COLORS,
                              GENERATOR_VERSION, render_primitives_image)


def generate_primitives_split(root, split, num_images, seed):
    """Write ``root/<split>/*.jpg`` and ``root/<split>.json`` (COCO format); returns the json.

    The output is a pure function of (seed, num_images, GENERATOR_VERSION)
    (``d2ext.datasets.synthetic``).
    """
    return PRIMITIVES.generate(root, split, num_images, seed)


def register_primitives_split(name, num_images, seed, root=None):
    """Register a primitives split under ``name``; its files are generated on first load."""
    PRIMITIVES.register(name, num_images, seed, root)


for _name, (_num_images, _seed) in PRIMITIVES_SPLITS.items():
    register_primitives_split(_name, _num_images, _seed)
