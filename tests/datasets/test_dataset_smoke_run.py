"""train_net.py end to end on a fabricated CrowdHuman split: a few iterations, then MR^-2."""
import math

import pytest

from d2ext.datasets.crowdhuman import register_crowdhuman
from detectron2.data import DatasetCatalog
from tests.conftest import config_path, read_metrics, run_train_net
from tests.datasets.fabricate import mask_region, person, write_crowdhuman

IMAGES = [
    (f"smoke{k}", 96, 128, [person(8 + 10 * k, 10, 30, 70), person(70, 5, 35, 80),
                            mask_region(0, 80, 40, 16)])
    for k in range(4)
]
SMALL_FAST = [
    "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128",
    "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.STEPS", "(1,)", "SOLVER.CHECKPOINT_PERIOD", "100",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
]


@pytest.fixture(scope="module")
def crowdhuman_smoke(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("crowdhuman_smoke"))
    odgt, image_dir = write_crowdhuman(root, "annotation_train.odgt", IMAGES)
    name = "crowdhuman_smoke"
    if name not in DatasetCatalog.list():
        register_crowdhuman(name, odgt, image_dir)
    return name


def test_crowdhuman_config_trains_and_reports_miss_rate(crowdhuman_smoke, tmp_path):
    out = tmp_path / "run"
    run_train_net(
        config_path("datasets", "faster_rcnn_R_50_FPN_crowdhuman.yaml"), out, *SMALL_FAST,
        "DATASETS.TRAIN", f"('{crowdhuman_smoke}',)", "DATASETS.TEST", f"('{crowdhuman_smoke}',)",
    )
    metrics = read_metrics(out)
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == 1
    assert all(math.isfinite(v) for m in metrics for k, v in m.items() if "loss" in k)
    (logged,) = [m for m in metrics if "bbox/mMR" in m]
    assert 0 < logged["bbox/mMR"] <= 100 and 0 <= logged["bbox/AP50"] <= 100
    assert (out / "inference" / crowdhuman_smoke / "coco_instances_results.json").is_file()
