"""Data loading that names bad data (docs/training.md#bad-data).

- An image that cannot be read (missing, truncated, not an image) raises :class:`ImageReadError`
  naming the file and the dataset, instead of PIL's bare "image file is truncated".
- Inverted boxes (x2 < x1 or y2 < y1 in XYXY_ABS) are dropped before the augmentations, with a
  warning naming the file: detectron2's ``Transform.apply_box`` takes the min and max of the
  transformed corners, which would silently turn them into valid boxes.
- :class:`DataErrorCheckpointHook` saves a checkpoint when training stops on an
  :class:`ImageReadError`, so a run can continue with ``--resume`` once the file is fixed.
"""
import logging
import sys

import numpy as np

from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.engine import HookBase
from detectron2.structures import BoxMode

__all__ = [
    "ImageReadError", "CheckedDatasetMapper", "DataErrorCheckpointHook", "drop_inverted_boxes",
]

logger = logging.getLogger(__name__)


class ImageReadError(OSError):
    """An image (or segmentation file) of a dataset could not be read. A single-message
    exception, so that torch's DataLoader re-raises it with its type in the main process."""


def _datasets_text(dataset_names):
    return ", ".join(dataset_names) if dataset_names else "unknown"


def _image_read_error(dataset_dict, dataset_names, error):
    """The :class:`ImageReadError` of ``error`` (raised while reading ``dataset_dict``'s files)."""
    files = [dataset_dict[k] for k in ("file_name", "sem_seg_file_name") if k in dataset_dict]
    return ImageReadError(
        f"cannot read {' / '.join(map(str, files))} (dataset: {_datasets_text(dataset_names)}): "
        f"{type(error).__name__}: {error}")


def drop_inverted_boxes(dataset_dict, dataset_names=()):
    """Remove the annotations of ``dataset_dict`` (mutated) whose box is inverted in XYXY_ABS
    (x2 < x1 or y2 < y1; zero-area boxes are left to the mappers, which drop them as empty);
    warn with the file name and the count. Returns the number dropped."""
    annotations = dataset_dict.get("annotations")
    if not annotations:
        return 0
    boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                      for a in annotations], dtype=np.float64).reshape(-1, 4)
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    num = int(inverted.sum())
    if num:
        dataset_dict["annotations"] = [a for a, bad in zip(annotations, inverted) if not bad]
        logger.warning(
            "dropped %d inverted box(es) (x2 < x1 or y2 < y1 in XYXY) of %d in %s (dataset: %s)",
            num, len(annotations), dataset_dict.get("file_name"), _datasets_text(dataset_names))
    return num


class CheckedDatasetMapper(DatasetMapper):
    """detectron2's ``DatasetMapper`` that names the file and dataset of an image that cannot be
    read (:class:`ImageReadError`) and drops inverted boxes before the augmentations
    (:func:`drop_inverted_boxes`). ``num_inverted_boxes`` counts the boxes dropped by this
    mapper (per data-loader worker)."""

    @configurable
    def __init__(self, is_train: bool = True, *, dataset_names=(), **kwargs):
        """
        Args:
            dataset_names: the datasets the mapper reads, named in errors and warnings
                (``from_config``: ``DATASETS.TRAIN`` in training, ``DATASETS.TEST`` otherwise).
            kwargs: as for ``DatasetMapper``.
        """
        super().__init__(is_train, **kwargs)
        self.dataset_names = tuple(dataset_names)
        self.num_inverted_boxes = 0

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["dataset_names"] = tuple(cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST)
        return ret

    def read_image(self, dataset_dict):
        """``utils.read_image`` of ``dataset_dict["file_name"]``, an :class:`ImageReadError`
        naming the file and dataset if that fails."""
        try:
            return utils.read_image(dataset_dict["file_name"], format=self.image_format)
        except OSError as e:
            raise _image_read_error(dataset_dict, self.dataset_names, e) from e

    def drop_inverted_boxes(self, dataset_dict):
        """:func:`drop_inverted_boxes` (training only: inference ignores the annotations)."""
        if self.is_train:
            self.num_inverted_boxes += drop_inverted_boxes(dataset_dict, self.dataset_names)

    def __call__(self, dataset_dict):
        dataset_dict = dict(dataset_dict)  # DatasetMapper deep-copies it
        self.drop_inverted_boxes(dataset_dict)
        try:
            return super().__call__(dataset_dict)
        except ImageReadError:
            raise
        except OSError as e:  # only its reads of the image and sem_seg files raise OSError
            raise _image_read_error(dataset_dict, self.dataset_names, e) from e


class DataErrorCheckpointHook(HookBase):
    """Save ``model_data_error.pth`` (tagged as the last checkpoint) when training stops on an
    :class:`ImageReadError`.

    The error at iteration k is raised while the step fetches its batch, before the model
    changes, so the checkpoint holds iteration k - 1: ``--resume`` repeats iteration k. Nothing
    is saved if no step ran since the start. detectron2's ``TrainerBase.train`` calls
    ``after_train`` in a ``finally`` block, where ``sys.exc_info()`` holds the exception.
    Only the main process writes checkpoints (``DetectionCheckpointer``).
    """

    def after_train(self):
        error = sys.exc_info()[1]
        if not isinstance(error, ImageReadError):
            return
        trainer = self.trainer
        if trainer.iter == trainer.start_iter:
            logger.error("data error at the first iteration (%d): no checkpoint saved",
                         trainer.iter)
            return
        logger.error("data error at iteration %d: saving model_data_error.pth (iteration %d)",
                     trainer.iter, trainer.iter - 1)
        trainer.checkpointer.save("model_data_error", iteration=trainer.iter - 1)
