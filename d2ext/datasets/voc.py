"""PASCAL VOC splits evaluated COCO-style (IoU-uniform Table 1, IoU-balanced Table 5).

Images and boxes come from detectron2's ``load_voc_instances``; each record additionally marks
the VOC "difficult" objects ``iscrowd=1``. COCO-style evaluation then ignores them as the VOC
protocol does (a detection on one is neither a true nor a false positive), and detectron2's
``DatasetMapper`` drops them from training, as mmdetection (the papers' framework) does.

Registered on import of ``d2ext``, all under ``$DETECTRON2_DATASETS`` and with
``evaluator_type="voc_coco_style"``: ``voc_0712_trainval`` (VOC2007 + VOC2012 trainval, 16,551
images) and detectron2's VOC names (``voc_2007_test``, ``voc_2007_trainval``, ...), which are
re-registered with the difficult flags. Registration does not touch the disk.
"""
import os
import xml.etree.ElementTree as ET

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.pascal_voc import CLASS_NAMES, load_voc_instances

from .layout import datasets_root, require_paths

__all__ = ["VOC_LAYOUT", "VOC_SPLITS", "load_voc_coco_style", "register_voc_coco_style"]

VOC_LAYOUT = """\
  VOC2007/
    Annotations/<image id>.xml
    ImageSets/Main/{train,val,trainval,test}.txt
    JPEGImages/<image id>.jpg
  VOC2012/
    Annotations/  ImageSets/Main/  JPEGImages/   (same structure)"""

# name -> [(directory under the root, ImageSets/Main split), ...]
VOC_SPLITS = {
    "voc_0712_trainval": [("VOC2007", "trainval"), ("VOC2012", "trainval")],
    "voc_2007_trainval": [("VOC2007", "trainval")],
    "voc_2007_train": [("VOC2007", "train")],
    "voc_2007_val": [("VOC2007", "val")],
    "voc_2007_test": [("VOC2007", "test")],
    "voc_2012_trainval": [("VOC2012", "trainval")],
    "voc_2012_train": [("VOC2012", "train")],
    "voc_2012_val": [("VOC2012", "val")],
}


def _difficult_flags(anno_file):
    """The ``<difficult>`` flag of each ``<object>`` in file order (absent means 0)."""
    tree = ET.parse(anno_file)
    return [int(obj.findtext("difficult", "0").strip() or 0) for obj in tree.findall("object")]


def load_voc_coco_style(dirname, split, class_names=CLASS_NAMES):
    """detectron2's ``load_voc_instances`` with difficult objects marked ``iscrowd=1``."""
    dataset = f"PASCAL VOC {os.path.basename(os.path.normpath(dirname))} {split}"
    require_paths(
        dataset, VOC_LAYOUT,
        os.path.join(dirname, "ImageSets", "Main", split + ".txt"),
        os.path.join(dirname, "Annotations"),
        os.path.join(dirname, "JPEGImages"),
    )
    records = load_voc_instances(dirname, split, class_names)
    for record in records:
        anno_file = os.path.join(dirname, "Annotations", f"{record['image_id']}.xml")
        flags = _difficult_flags(anno_file)
        for anno, difficult in zip(record["annotations"], flags):
            anno["iscrowd"] = difficult
    return records


def register_voc_coco_style(name, parts, root=None, class_names=CLASS_NAMES):
    """Register ``name`` as the union of ``parts`` = [(directory, split), ...] under ``root``.

    Replaces an existing registration of the same name (detectron2's builtin VOC splits).
    """
    root = datasets_root() if root is None else root
    dirs = [(os.path.join(root, d), split) for d, split in parts]

    def load():
        return [r for dirname, split in dirs for r in load_voc_coco_style(dirname, split,
                                                                            class_names)]

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    years = sorted({2012 if "2012" in d else 2007 for d, _ in parts})
    MetadataCatalog.get(name).set(
        thing_classes=list(class_names),
        evaluator_type="voc_coco_style",
        dirnames=[d for d, _ in dirs],
        splits=[s for _, s in dirs],
        year=years[0] if len(years) == 1 else years,
    )
    if len(dirs) == 1:  # the keys detectron2's VOC evaluator reads
        MetadataCatalog.get(name).set(dirname=dirs[0][0], split=dirs[0][1])


for _name, _parts in VOC_SPLITS.items():
    register_voc_coco_style(_name, _parts)
