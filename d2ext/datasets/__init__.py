"""The datasets, registered on import (lazily: nothing is read until loaded).

- the embedded shapes set: ``shapes_train``, ``shapes_val`` (``shapes``; generated on first use)
- the embedded primitives set: ``primitives_train``, ``primitives_val`` (``primitives``; the
  same, ``synthetic`` holds what the two generators share)
- PASCAL VOC, COCO-style evaluation: ``voc_0712_trainval``, ``voc_2007_test``, ... (``voc``)
- CrowdHuman full body: ``crowdhuman_train``, ``crowdhuman_val`` (``crowdhuman``)
- Cityscapes boxes: ``cityscapes_fine_detection_train`` / ``_val`` (``cityscapes``)

Layouts under ``$DETECTRON2_DATASETS``: docs/datasets.md.
"""
from . import cityscapes, crowdhuman, primitives, shapes, voc  # noqa: F401  (registration)
from .layout import DatasetFilesNotFoundError, datasets_root

__all__ = ["DatasetFilesNotFoundError", "datasets_root"]
