"""Tiny datasets written in each official format (VOC, CrowdHuman, Cityscapes) for the tests."""
import json
import os
import sys
import types
from collections import namedtuple

import cv2
import numpy as np

from detectron2.data.datasets.builtin_meta import CITYSCAPES_CATEGORIES


def _write_image(path, height, width, boxes=(), seed=0):
    """Noise background with a bright filled rectangle per XYXY box (something to learn)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        image[int(y1):int(y2), int(x1):int(x2)] = (40, 200, 230)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, image)


# ---------------------------------------------------------------- PASCAL VOC
def write_voc(root, year_dir, split, images):
    """``images``: [(image id, height, width, [(class, xmin, ymin, xmax, ymax, difficult)])].

    Coordinates are VOC's 1-based inclusive pixel indices, as written in the XML.
    """
    base = os.path.join(root, year_dir)
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    for k, (image_id, height, width, objects) in enumerate(images):
        xml = [f"<annotation><folder>{year_dir}</folder><filename>{image_id}.jpg</filename>",
               f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
        for name, x1, y1, x2, y2, difficult in objects:
            xml.append(
                f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                f"<difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            )
        xml.append("</annotation>")
        with open(os.path.join(base, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write("\n".join(xml))
        _write_image(os.path.join(base, "JPEGImages", f"{image_id}.jpg"), height, width,
                     [(o[1] - 1, o[2] - 1, o[3], o[4]) for o in objects], seed=k)
    with open(os.path.join(base, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.write("\n".join(i[0] for i in images) + "\n")


# ---------------------------------------------------------------- CrowdHuman
def write_crowdhuman(root, odgt_name, images):
    """``images``: [(ID, height, width, [gtbox dict as in the .odgt files])]; returns paths."""
    image_dir = os.path.join(root, "Images")
    os.makedirs(image_dir, exist_ok=True)
    odgt = os.path.join(root, odgt_name)
    with open(odgt, "w") as f:
        for k, (image_id, height, width, gtboxes) in enumerate(images):
            persons = [(b["fbox"][0], b["fbox"][1], b["fbox"][0] + b["fbox"][2],
                        b["fbox"][1] + b["fbox"][3]) for b in gtboxes if b["tag"] == "person"]
            _write_image(os.path.join(image_dir, f"{image_id}.jpg"), height, width, persons,
                         seed=k)
            f.write(json.dumps({"ID": image_id, "gtboxes": gtboxes}) + "\n")
    return odgt, image_dir


def person(x, y, w, h, ignore=0):
    """A CrowdHuman ``gtboxes`` entry; head and visible boxes are inside the full body."""
    return {"tag": "person", "fbox": [x, y, w, h], "vbox": [x, y, w, h // 2],
            "hbox": [x + w // 4, y, w // 2, h // 6], "head_attr": {"ignore": 0, "occ": 0},
            "extra": {"box_id": 0, "occ": 0, **({"ignore": 1} if ignore else {})}}


def mask_region(x, y, w, h):
    return {"tag": "mask", "fbox": [x, y, w, h], "vbox": [x, y, w, h], "hbox": [x, y, w, h],
            "extra": {"ignore": 1}}


# ---------------------------------------------------------------- Cityscapes
def write_cityscapes(root, split, city, frames):
    """``frames``: [(frame id, instanceIds array (H, W) uint16)]; returns (image dir, gt dir).

    Pixel values follow Cityscapes: label id * 1000 + k for instances, the bare label id for
    crowd (``*group``) regions and stuff.
    """
    image_dir = os.path.join(root, "leftImg8bit", split)
    gt_dir = os.path.join(root, "gtFine", split)
    for frame, instance_ids in frames:
        stem = f"{city}_000000_{frame:06d}"
        height, width = instance_ids.shape
        _write_image(os.path.join(image_dir, city, f"{stem}_leftImg8bit.png"), height, width)
        gt = os.path.join(gt_dir, city, stem)
        os.makedirs(os.path.dirname(gt), exist_ok=True)
        assert cv2.imwrite(f"{gt}_gtFine_instanceIds.png", instance_ids.astype(np.uint16))
        label_ids = np.where(instance_ids >= 1000, instance_ids // 1000, instance_ids)
        assert cv2.imwrite(f"{gt}_gtFine_labelIds.png", label_ids.astype(np.uint8))
        with open(f"{gt}_gtFine_polygons.json", "w") as f:
            json.dump({"imgHeight": height, "imgWidth": width, "objects": []}, f)
    return image_dir, gt_dir


_Label = namedtuple("_Label", "name id hasInstances ignoreInEval")


def cityscapes_labels_module():
    """A stand-in for ``cityscapesscripts.helpers.labels`` when that package is not installed.

    Built from detectron2's copy of the Cityscapes label table (``CITYSCAPES_CATEGORIES``) plus
    the instance classes Cityscapes excludes from evaluation (caravan, trailer).
    """
    labels = [_Label("unlabeled", 0, False, True)]
    labels += [_Label(c["name"], c["id"], bool(c["isthing"]), False)
               for c in CITYSCAPES_CATEGORIES]
    labels += [_Label("caravan", 29, True, True), _Label("trailer", 30, True, True)]
    labels.sort(key=lambda label: label.id)
    module = types.ModuleType("cityscapesscripts.helpers.labels")
    module.labels = labels
    module.id2label = {label.id: label for label in labels}
    module.name2label = {label.name: label for label in labels}
    return module


def install_cityscapes_labels(monkeypatch):
    """Make ``cityscapesscripts.helpers.labels`` importable (the real one when installed)."""
    try:
        import cityscapesscripts.helpers.labels  # noqa: F401
        return
    except ImportError:
        pass
    labels = cityscapes_labels_module()
    package, helpers = types.ModuleType("cityscapesscripts"), types.ModuleType(
        "cityscapesscripts.helpers")
    package.helpers, helpers.labels = helpers, labels
    package.__path__, helpers.__path__ = [], []
    for name, module in [("cityscapesscripts", package), ("cityscapesscripts.helpers", helpers),
                         ("cityscapesscripts.helpers.labels", labels)]:
        monkeypatch.setitem(sys.modules, name, module)
