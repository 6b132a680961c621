"""Cityscapes boxes for detection (IoU-balanced Table 6), evaluated with COCO-style AP.

Instances come from detectron2's ``load_cityscapes_instances`` on the ``gtFine``
``*_instanceIds.png`` files (the instance masks, as mmdetection's Cityscapes conversion used by
the paper), kept as RLE masks; each box is the mask's pixel-covering box (``toBbox``, COCO's
convention) and the COCO area is the mask's pixel count. Crowd regions (``*group`` labels)
are ``iscrowd=1``. The 8 classes are detectron2's Cityscapes thing classes.

detectron2's loader needs the ``cityscapesscripts`` package (``pip install cityscapesscripts``).
Registered on import of ``d2ext`` with ``evaluator_type="cityscapes_boxes"``:
``cityscapes_fine_detection_train`` (2,975 images) and ``cityscapes_fine_detection_val`` (500)
under ``$DETECTRON2_DATASETS/cityscapes``.
"""
import os

import pycocotools.mask as mask_util

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.data.datasets.cityscapes import load_cityscapes_instances
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


def load_cityscapes_boxes(image_dir, gt_dir):
    """detectron2's Cityscapes instances (from the instanceIds PNGs) as detection boxes."""
    require_paths("Cityscapes", CITYSCAPES_LAYOUT, image_dir, gt_dir)
    try:
        import cityscapesscripts  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "Cityscapes loading uses detectron2's load_cityscapes_instances, which needs the "
            "cityscapesscripts package: pip install cityscapesscripts"
        ) from e
    records = load_cityscapes_instances(image_dir, gt_dir, from_json=False, to_polygons=False)
    for record in records:
        for anno in record["annotations"]:
            anno["bbox"] = mask_util.toBbox(anno["segmentation"]).tolist()
            anno["bbox_mode"] = BoxMode.XYWH_ABS
            anno["iscrowd"] = int(anno["iscrowd"])
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
