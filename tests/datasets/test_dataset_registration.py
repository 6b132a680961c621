"""Registration: names, roots from $DETECTRON2_DATASETS, no disk access, evaluator dispatch."""
import json
import os
import subprocess
import sys

import pytest

from d2ext import CrowdHumanEvaluator, build_dataset_evaluator
from train_net import add_all_configs
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from tests.conftest import REPO

NAMES = {
    "voc_0712_trainval": "voc_coco_style", "voc_2007_test": "voc_coco_style",
    "crowdhuman_train": "crowdhuman", "crowdhuman_val": "crowdhuman",
    "cityscapes_fine_detection_train": "cityscapes_boxes",
    "cityscapes_fine_detection_val": "cityscapes_boxes",
}


def test_import_registers_every_split_under_the_root_without_reading_it(tmp_path):
    root = tmp_path / "nowhere"  # does not exist: registration must not look at it
    code = (
        "import json, d2ext\n"
        "from detectron2.data import DatasetCatalog, MetadataCatalog\n"
        f"names = {sorted(NAMES)!r}\n"
        "print(json.dumps({n: [n in DatasetCatalog.list(), MetadataCatalog.get(n).evaluator_type,"
        " MetadataCatalog.get(n).get('odgt_file') or MetadataCatalog.get(n).get('image_dir')"
        " or MetadataCatalog.get(n).get('dirnames')] for n in names}))\n"
    )
    env = dict(os.environ, DETECTRON2_DATASETS=str(root))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True).stdout
    registered = json.loads(out.strip().splitlines()[-1])
    for name, evaluator_type in NAMES.items():
        present, kind, where = registered[name]
        assert present and kind == evaluator_type, name
        assert str(root) in json.dumps(where), (name, where)
    assert not root.exists()
    assert json.dumps(registered["voc_0712_trainval"][2]) == json.dumps(
        [str(root / "VOC2007"), str(root / "VOC2012")])


def test_dispatch_on_evaluator_type(tmp_path):
    cfg = add_all_configs(get_cfg())
    cfg.TEST.DETECTIONS_PER_IMAGE = 250
    name = "dispatch_case_crowdhuman"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [
            {"file_name": "x.jpg", "image_id": 1, "height": 10, "width": 10, "annotations": []}])
        MetadataCatalog.get(name).set(thing_classes=["person"], evaluator_type="crowdhuman")
    evaluator = build_dataset_evaluator(cfg, name, str(tmp_path))
    assert isinstance(evaluator, CrowdHumanEvaluator) and evaluator._max_dets == 250
    other = "dispatch_case_semseg"
    if other not in DatasetCatalog.list():
        DatasetCatalog.register(other, lambda: [])
        MetadataCatalog.get(other).set(evaluator_type="sem_seg")
    with pytest.raises(ValueError, match="'sem_seg'"):
        build_dataset_evaluator(cfg, other, str(tmp_path))
