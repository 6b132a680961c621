"""Dataset mapper for PADet: SSD-style box-aware augmentation and the square resize
(docs/padet_data.md).

detectron2's ``DatasetMapper`` gives its augmentations only the image, so SSD's min-IoU crop,
which samples crops relative to the ground-truth boxes, needs this mapper. It returns the same
format as ``DatasetMapper``: ``image`` (uint8 CHW tensor in ``INPUT.FORMAT``) and, in training,
``instances`` with ``gt_boxes`` and ``gt_classes``. Like ``d2ext.data.CheckedDatasetMapper``, it
names the file and dataset of an image that cannot be read and drops inverted boxes before the
augmentations.
"""
import copy

import numpy as np
import torch

from d2ext.data import CheckedDatasetMapper
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances

from .augmentation import box_centers_inside, build_padet_augmentation
from .config import check_padet_input_size

__all__ = ["PADetDatasetMapper"]


class PADetDatasetMapper(CheckedDatasetMapper):
    """Map a detectron2 dataset dict to PADet's input (boxes only; masks and keypoints are not
    used by PADet and are dropped).

    Training: crowd annotations and inverted boxes are dropped (as ``DatasetMapper`` and
    ``CheckedDatasetMapper`` do); the augmentations see the image and the boxes; after them a
    box is kept iff its centre lies inside the output image (SSD's crop rule, unaffected by
    flip and resize) and, once clipped, its shorter side
    is at least ``min_box_size`` (a fraction of ``input_size``). If the image had boxes but none
    survives, the sample falls back to the plain resize of the original (RFBNet's rule), so
    every image stays in training. An image without annotations gives empty ``instances``.

    Inference: resize only; annotations are removed.
    """

    @configurable
    def __init__(
        self, is_train: bool = True, *, input_size: int, min_box_size: float = 0.01, **kwargs
    ):
        """
        Args:
            input_size: side of the square network input (the last augmentation resizes to it).
            min_box_size: minimum shorter box side after augmentation, as a fraction of
                ``input_size``.
            kwargs: as for ``CheckedDatasetMapper`` (``augmentations``, ``image_format``,
                ``dataset_names``, ...).
        """
        super().__init__(is_train, **kwargs)
        self.input_size = input_size
        self.min_box_size = min_box_size
        self.resize_only = T.AugmentationList([T.Resize((input_size, input_size))])

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        check_padet_input_size(cfg)
        ret = super().from_config(cfg, is_train)
        ret.update(
            augmentations=build_padet_augmentation(cfg, is_train),
            input_size=cfg.MODEL.PADET.INPUT_SIZE,
            min_box_size=cfg.INPUT.PADET.MIN_BOX_SIZE,
            use_instance_mask=False,
            use_keypoint=False,
            recompute_boxes=False,
        )
        ret.pop("keypoint_hflip_indices", None)
        return ret

    def _valid_boxes(self, boxes: np.ndarray, image_shape):
        """Clip the augmented boxes to the image; mask of those whose centre lies inside and
        whose shorter side is at least ``min_box_size * input_size``."""
        h, w = image_shape
        inside = box_centers_inside(boxes, 0, 0, w, h)
        clipped = boxes.copy()
        clipped[:, 0::2] = clipped[:, 0::2].clip(0, w)
        clipped[:, 1::2] = clipped[:, 1::2].clip(0, h)
        sides = np.minimum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1])
        keep = inside & (sides >= self.min_box_size * self.input_size) & (sides > 0)
        return keep, clipped

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): metadata of one image, in detectron2 dataset format.

        Returns:
            dict: the input format of detectron2's models (see ``DatasetMapper``).
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self.read_image(dataset_dict)
        utils.check_image_size(dataset_dict, image)

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            aug_input = T.AugInput(image)
            self.augmentations(aug_input)
            image = aug_input.image
            dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
            return dataset_dict

        self.drop_inverted_boxes(dataset_dict)
        annos = [obj for obj in dataset_dict.pop("annotations", []) if obj.get("iscrowd", 0) == 0]
        boxes = np.array(
            [BoxMode.convert(obj["bbox"], obj["bbox_mode"], BoxMode.XYXY_ABS) for obj in annos],
            dtype=np.float64,
        ).reshape(-1, 4)
        classes = np.array([obj["category_id"] for obj in annos], dtype=np.int64)

        aug_input = T.AugInput(image, boxes=boxes)
        self.augmentations(aug_input)
        keep, out_boxes = self._valid_boxes(aug_input.boxes, aug_input.image.shape[:2])
        if len(boxes) > 0 and not keep.any():
            aug_input = T.AugInput(image, boxes=boxes)
            self.resize_only(aug_input)
            keep, out_boxes = self._valid_boxes(aug_input.boxes, aug_input.image.shape[:2])

        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        instances = Instances(image.shape[:2])
        instances.gt_boxes = Boxes(torch.as_tensor(out_boxes[keep], dtype=torch.float32))
        instances.gt_classes = torch.as_tensor(classes[keep], dtype=torch.int64)
        dataset_dict["instances"] = instances
        return dataset_dict
