"""CrowdHuman full-body detection (RGA/PRM Table 7) from the official ``.odgt`` files.

Each line of an ``.odgt`` file is one image: ``{"ID": ..., "gtboxes": [{"tag": "person" |
"mask", "fbox": [x, y, w, h], "vbox": ..., "hbox": ..., "extra": {"ignore": 0 | 1, ...}}]}``.
Full-body boxes (``fbox``, amodal, often extending past the image) are clipped to the image as
the CrowdHuman evaluation does. ``mask`` boxes (crowds, reflections, statues) and boxes with
``extra.ignore`` are ignore regions, stored ``iscrowd=1``: evaluation ignores them (see
``d2ext.evaluation.miss_rate``) and detectron2's ``DatasetMapper`` drops them from the training
targets (so, as for COCO crowd regions, nothing is regressed towards them). Images sizes are
read from the image headers (the ``.odgt`` files have none).

Registered on import of ``d2ext`` with ``evaluator_type="crowdhuman"``: ``crowdhuman_train``
(15,000 images) and ``crowdhuman_val`` (4,370) under ``$DETECTRON2_DATASETS/crowdhuman``.
"""
import json
import os

from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .layout import datasets_root, require_paths

__all__ = ["CROWDHUMAN_LAYOUT", "CROWDHUMAN_SPLITS", "load_crowdhuman_odgt",
           "register_crowdhuman"]

CROWDHUMAN_LAYOUT = """\
  crowdhuman/
    annotation_train.odgt
    annotation_val.odgt
    Images/<ID>.jpg   (CrowdHuman_train01/02/03.zip and CrowdHuman_val.zip extracted here)"""

# name -> annotation file under $DETECTRON2_DATASETS/crowdhuman
CROWDHUMAN_SPLITS = {
    "crowdhuman_train": "annotation_train.odgt",
    "crowdhuman_val": "annotation_val.odgt",
}
_BOX_KEYS = ("fbox", "vbox")  # full body (the papers'), visible body


def _is_ignore(gtbox):
    return gtbox.get("tag") != "person" or gtbox.get("extra", {}).get("ignore", 0) != 0


def load_crowdhuman_odgt(odgt_file, image_dir, box_key="fbox"):
    """detectron2 dataset dicts of one ``.odgt`` file: class 0 "person", ignores ``iscrowd=1``."""
    if box_key not in _BOX_KEYS:
        raise ValueError(f"box_key must be one of {_BOX_KEYS}, got {box_key!r}")
    require_paths(f"CrowdHuman ({os.path.basename(odgt_file)})", CROWDHUMAN_LAYOUT,
                  odgt_file, image_dir)
    records = []
    with open(odgt_file) as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    for line_no, line in lines:
        try:
            entry = json.loads(line)
            image_id, gtboxes = entry["ID"], entry.get("gtboxes", [])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{odgt_file}:{line_no}: not a CrowdHuman record ({e!r})") from e
        file_name = os.path.join(image_dir, f"{image_id}.jpg")
        require_paths(f"CrowdHuman ({os.path.basename(odgt_file)}:{line_no})",
                      CROWDHUMAN_LAYOUT, file_name)
        with Image.open(file_name) as image:
            width, height = image.size
        annotations = []
        for gtbox in gtboxes:
            x, y, w, h = (float(v) for v in gtbox[box_key])
            x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if x2 <= x1 or y2 <= y1:  # entirely outside the image
                continue
            annotations.append({
                "bbox": [x1, y1, x2, y2],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": 0,
                "iscrowd": int(_is_ignore(gtbox)),
            })
        records.append({
            "file_name": file_name, "image_id": image_id, "height": height, "width": width,
            "annotations": annotations,
        })
    return records


def register_crowdhuman(name, odgt_file, image_dir, box_key="fbox"):
    """Register one CrowdHuman split (loaded lazily: registration does not touch the disk)."""
    DatasetCatalog.register(name, lambda: load_crowdhuman_odgt(odgt_file, image_dir, box_key))
    MetadataCatalog.get(name).set(
        thing_classes=["person"], evaluator_type="crowdhuman",
        odgt_file=odgt_file, image_root=image_dir,
    )


for _name, _odgt in CROWDHUMAN_SPLITS.items():
    _root = os.path.join(datasets_root(), "crowdhuman")
    register_crowdhuman(_name, os.path.join(_root, _odgt), os.path.join(_root, "Images"))
