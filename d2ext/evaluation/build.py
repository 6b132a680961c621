"""The evaluator of a registered dataset, chosen by its metadata's ``evaluator_type``."""
from detectron2.data import MetadataCatalog

from .coco import COCOEvaluatorWithIoUThresholds, dataset_json_file
from .crowdhuman import CrowdHumanEvaluator

__all__ = ["COCO_STYLE_EVALUATOR_TYPES", "build_dataset_evaluator"]

# evaluator types scored with COCO AP (+ AP50..AP95): COCO json datasets, the VOC splits
# (COCO-style, difficult objects ignored), Cityscapes boxes; detectron2's own "pascal_voc" and
# "cityscapes_instance" registrations are scored the same way (the papers' protocol).
COCO_STYLE_EVALUATOR_TYPES = (
    "coco", "voc_coco_style", "pascal_voc", "cityscapes_boxes", "cityscapes_instance",
)


def build_dataset_evaluator(cfg, dataset_name, output_folder):
    """``CrowdHumanEvaluator`` for ``evaluator_type`` "crowdhuman", else COCO-style AP.

    A dataset without ``evaluator_type`` is evaluated as COCO. Datasets whose json file is
    written on first use (the shapes splits) are loaded once first.
    """
    metadata = MetadataCatalog.get(dataset_name)
    evaluator_type = metadata.get("evaluator_type", "coco")
    if evaluator_type == "crowdhuman":
        return CrowdHumanEvaluator(
            dataset_name, output_dir=output_folder,
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )
    if evaluator_type not in COCO_STYLE_EVALUATOR_TYPES:
        raise ValueError(
            f"dataset {dataset_name!r} has evaluator_type {evaluator_type!r}; this project "
            f"evaluates 'crowdhuman' and {', '.join(map(repr, COCO_STYLE_EVALUATOR_TYPES))}"
        )
    dataset_json_file(dataset_name)  # written first by a dataset that writes it on first use
    # use_fast_impl=False: the pycocotools path, no compiled detectron2 ops.
    return COCOEvaluatorWithIoUThresholds(
        dataset_name, output_dir=output_folder, use_fast_impl=False
    )
