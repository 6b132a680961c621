"""What the embedded, generated datasets (``shapes``, ``primitives``) share: writing a seeded
split as COCO json + JPEGs, and registering it so that it is written on first use.

A dataset supplies ``render(rng) -> (image, objects)``: one RGB uint8 image and its objects as
``(class index, [x, y, w, h], area)``. Image ``i`` of a split is rendered from
``np.random.default_rng([seed, i])``, so a split is a pure function of the dataset's
``version``, the seed and the number of images: the same arguments give byte-identical files.
"""
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Sequence, Tuple

import cv2
import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .layout import datasets_root

__all__ = ["SyntheticDataset"]

JPEG_QUALITY = 95


def float_boxes(records):
    """``records`` with every annotation's ``bbox`` as floats, in place.

    The generated json stores integer pixel boxes, and ``load_coco_json`` passes them on as
    ints. detectron2 expects float boxes: ``transform_instance_annotations`` transforms the box
    as a numpy array of the box's own dtype, in place, so a resize by a non-integer scale
    truncates integer coordinates (x = 171 at scale 0.5 becomes 85, not 85.5), and the
    training targets and GT boxes of every resized image move by up to a pixel.
    """
    for record in records:
        for annotation in record.get("annotations", []):
            annotation["bbox"] = [float(v) for v in annotation["bbox"]]
    return records


@dataclass(frozen=True)
class SyntheticDataset:
    """A generated dataset: its name, classes, renderer and generator version.

    Attributes:
        name: the folder under ``$DETECTRON2_DATASETS`` and the json's description prefix;
            ``$<NAME>_DATASET_DIR`` overrides the folder.
        classes: class names; COCO category ``i + 1`` is ``classes[i]``.
        colors: one RGB colour per class, for visualization (``thing_colors``).
        version: bumped whenever ``render`` changes its output, so that splits written by an
            older generator are regenerated.
        render: ``rng -> (image, objects)``, see the module docstring.
    """

    name: str
    classes: Tuple[str, ...]
    colors: Sequence[Tuple[int, int, int]]
    version: int
    render: Callable

    def default_root(self):
        """``$<NAME>_DATASET_DIR``, else ``$DETECTRON2_DATASETS/<name>``."""
        env = f"{self.name.upper()}_DATASET_DIR"
        return os.environ.get(env) or os.path.join(datasets_root(), self.name)

    def generate(self, root, split, num_images, seed):
        """Write ``root/<split>/*.jpg`` (JPEG quality 95) and ``root/<split>.json`` (COCO);
        returns the json's path.

        Written to a temporary directory and moved into place, the json last, so that an
        interrupted run leaves nothing half-written.
        """
        os.makedirs(root, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{split}-", dir=root)
        try:
            images, annotations = [], []
            for i in range(num_images):
                image, objects = self.render(np.random.default_rng([seed, i]))
                file_name = f"{i:06d}.jpg"
                cv2.imwrite(os.path.join(tmp, file_name), image[:, :, ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                images.append({"id": i + 1, "file_name": file_name,
                               "height": image.shape[0], "width": image.shape[1]})
                for cls_idx, bbox, area in objects:
                    annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                        "category_id": cls_idx + 1, "bbox": bbox,
                                        "area": area, "iscrowd": 0})
            coco = {
                "info": {"description": f"{self.name} {split}", "version": self.version,
                         "seed": seed, "num_images": num_images},
                "images": images,
                "annotations": annotations,
                "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.classes)],
            }
            with open(os.path.join(tmp, "annotations.json"), "w") as f:
                json.dump(coco, f, sort_keys=True)
            image_dir, json_file = os.path.join(root, split), os.path.join(root, f"{split}.json")
            shutil.rmtree(image_dir, ignore_errors=True)
            os.replace(os.path.join(tmp, "annotations.json"), json_file + ".tmp")
            os.rename(tmp, image_dir)
            os.replace(json_file + ".tmp", json_file)  # last: its presence marks a complete split
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return json_file

    def is_current(self, json_file, num_images, seed):
        """Whether ``json_file`` exists and was written by this generator with these arguments."""
        if not os.path.isfile(json_file):
            return False
        with open(json_file) as f:
            info = json.load(f)["info"]
        return (info["version"], info["seed"], info["num_images"]) == (
            self.version, seed, num_images)

    def register(self, split, num_images, seed, root=None):
        """Register ``split`` in detectron2's catalogs (COCO evaluation, the class metadata);
        its files are written under ``root`` (default: ``default_root()``) on first load, and
        again whenever they were written with other arguments or another generator version."""
        root = root or self.default_root()
        json_file = os.path.join(root, f"{split}.json")
        image_root = os.path.join(root, split)

        def load():
            if not self.is_current(json_file, num_images, seed):
                self.generate(root, split, num_images, seed)
            return float_boxes(load_coco_json(json_file, image_root, split))

        DatasetCatalog.register(split, load)
        MetadataCatalog.get(split).set(
            json_file=json_file,
            image_root=image_root,
            evaluator_type="coco",
            thing_classes=list(self.classes),
            thing_colors=list(self.colors),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(self.classes))},
        )
