"""Cityscapes boxes for detection (IoU-balanced Table 6), evaluated with COCO-style AP.

Instances come from the ``gtFine`` ``*_instanceIds.png`` files (the instance masks, as
mmdetection's Cityscapes conversion used by the paper), kept as RLE masks; each box is the mask's
pixel-covering box (``toBbox``, COCO's convention) and the COCO area is the mask's pixel count.
Crowd regions (``*group`` labels, pixel value = bare label id) are ``iscrowd=1``; classes that
Cityscapes excludes from evaluation (caravan, trailer) are dropped. The 8 classes are the
Cityscapes instance classes in label-id order, as detectron2's Cityscapes thing classes.

The label table comes from the ``cityscapesscripts`` package (``pip install cityscapesscripts``).
The loader reads the PNGs itself rather than through detectron2's ``load_cityscapes_instances``,
whose version on detectron2 main imports its label table from a path outside
``cityscapesscripts``.
Registered on import of ``d2ext`` with ``evaluator_type="cityscapes_boxes"``:
``cityscapes_fine_detection_train`` (2,975 images) and ``cityscapes_fine_detection_val`` (500)
under ``$DETECTRON2_DATASETS/cityscapes``.
"""
import logging
import os

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.structures import BoxMode

from .layout import datasets_root, require_paths

__all__ = ["CITYSCAPES_LAYOUT", "CITYSCAPES_SPLITS", "load_cityscapes_boxes",
           "register_cityscapes_boxes"]

CITYSCAPES_LAYOUT = """\
  cityscapes/
    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_{instanceIds,labelIds}.png
                                               and _gtFine_polygons.json"""

# name -> (image dir, gt dir) under $DETECTRON2_DATASETS
CITYSCAPES_SPLITS = {
    "cityscapes_fine_detection_train": ("cityscapes/leftImg8bit/train", "cityscapes/gtFine/train"),
    "cityscapes_fine_detection_val": ("cityscapes/leftImg8bit/val", "cityscapes/gtFine/val"),
}


IMAGE_SUFFIX, INSTANCE_SUFFIX = "_leftImg8bit.png", "_gtFine_instanceIds.png"
FIRST_INSTANCE_LABEL_ID = 24  # "person": label ids below it are stuff or void


def _cityscapes_labels():
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError as e:
        raise ImportError(
            "Cityscapes loading reads the label table of the cityscapesscripts package: "
            "pip install cityscapesscripts"
        ) from e
    return labels


def _frames(image_dir, gt_dir):
    """(image file, instanceIds file) of every frame, sorted by city and name."""
    frames = []
    for city in sorted(os.listdir(image_dir)):
        for name in sorted(os.listdir(os.path.join(image_dir, city))):
            if name.endswith(IMAGE_SUFFIX):
                stem = name[: -len(IMAGE_SUFFIX)]
                frames.append((os.path.join(image_dir, city, name),
                               os.path.join(gt_dir, city, stem + INSTANCE_SUFFIX)))
    if not frames:
        raise FileNotFoundError(f"no *{IMAGE_SUFFIX} images under {image_dir}")
    missing = [gt for _, gt in frames if not os.path.isfile(gt)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} instanceIds files missing, e.g. {missing[0]}")
    return frames


def _frame_annotations(instance_file, label_of, contiguous_id):
    """Annotations of one frame: one per instance (or crowd region) of an evaluated class."""
    with Image.open(instance_file) as im:
        ids = np.asarray(im, order="F")
    annos = []
    for value in np.unique(ids[ids >= FIRST_INSTANCE_LABEL_ID]):
        label = label_of[value // 1000 if value >= 1000 else value]
        if label.id not in contiguous_id:
            continue
        mask = np.asarray(ids == value, dtype=np.uint8, order="F")
        rows, cols = np.nonzero(mask)
        if rows.max() <= rows.min() or cols.max() <= cols.min():  # a line: no area
            continue
        rle = mask_util.encode(mask[:, :, None])[0]
        annos.append({"iscrowd": int(value < 1000), "category_id": contiguous_id[label.id],
                      "segmentation": rle, "bbox": mask_util.toBbox(rle).tolist(),
                      "bbox_mode": BoxMode.XYWH_ABS})
    return annos, ids.shape


def load_cityscapes_boxes(image_dir, gt_dir):
    """The Cityscapes instances of ``gtFine/*_instanceIds.png`` as detection boxes."""
    require_paths("Cityscapes", CITYSCAPES_LAYOUT, image_dir, gt_dir)
    labels = _cityscapes_labels()
    label_of = {label.id: label for label in labels}
    evaluated = [label for label in labels if label.hasInstances and not label.ignoreInEval]
    contiguous_id = {label.id: k for k, label in enumerate(evaluated)}
    records = []
    for image_file, instance_file in _frames(image_dir, gt_dir):
        annos, (height, width) = _frame_annotations(instance_file, label_of, contiguous_id)
        records.append({"file_name": image_file, "image_id": os.path.basename(image_file),
                        "height": height, "width": width, "annotations": annos})
    logging.getLogger(__name__).info("Loaded %d Cityscapes images from %s", len(records),
                                     image_dir)
    return records


def register_cityscapes_boxes(name, image_dir, gt_dir):
    """Register a Cityscapes detection split (lazy: registration does not touch the disk)."""
    DatasetCatalog.register(name, lambda: load_cityscapes_boxes(image_dir, gt_dir))
    meta = _get_builtin_metadata("cityscapes")
    MetadataCatalog.get(name).set(
        thing_classes=meta["thing_classes"], evaluator_type="cityscapes_boxes",
        image_dir=image_dir, gt_dir=gt_dir,
    )


for _name, (_image_dir, _gt_dir) in CITYSCAPES_SPLITS.items():
    register_cityscapes_boxes(
        _name, os.path.join(datasets_root(), _image_dir), os.path.join(datasets_root(), _gt_dir)
    )
