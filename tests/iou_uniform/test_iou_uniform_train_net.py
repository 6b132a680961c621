"""The IoU-uniform shapes config trains a few iterations through train_net.py and evaluates."""
import json
import math

from tests.conftest import TINY_VAL, config_path, read_metrics, run_train_net

FEW_ITERS = ["SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
             "SOLVER.STEPS", "(2,)", "SOLVER.CHECKPOINT_PERIOD", "100",
             "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


def test_iou_uniform_shapes_config_trains_and_evaluates(tiny_shapes, tmp_path):
    run_train_net(config_path("shapes", "iou_uniform_R_18_FPN.yaml"), tmp_path, *FEW_ITERS)
    metrics = read_metrics(tmp_path)
    last = [m for m in metrics if "total_loss" in m][-1]
    assert last["iteration"] == 2
    for k in ("loss_cls", "loss_box_reg", "loss_iou", "loss_rpn_cls", "loss_rpn_loc"):
        assert math.isfinite(last[k])
    assert last["iou_uniform/num_reg_samples"] > 0  # logged, not in the loss dict
    (evaluated,) = [m for m in metrics if "bbox/AP" in m]
    assert {"bbox/AP50", "bbox/AP75", "bbox/AP90"} <= set(evaluated)
    preds = json.load(open(tmp_path / "inference" / TINY_VAL / "coco_instances_results.json"))
    assert len(preds) > 0
