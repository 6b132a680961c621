"""The shapes PADet config trains a few iterations through train_net.py and evaluates."""
import math

from tests.conftest import config_path, read_metrics, run_train_net

FEW_ITERS = ["SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
             "SOLVER.STEPS", "(2,)", "SOLVER.CHECKPOINT_PERIOD", "100",
             # an untrained APM scores every anchor ~0.5; keep every class score for evaluation
             "MODEL.PADET.SCORE_THRESH_TEST", "0.0"]


def test_padet_shapes_config_trains_and_evaluates(tiny_shapes, tmp_path):
    out = tmp_path / "run"
    run_train_net(config_path("shapes", "padet_vgg16_0.25x_256_flip_2600it.yaml"), out, *FEW_ITERS)
    metrics = read_metrics(out)
    names = {"loss_apm_cls", "loss_apm_box_reg", "loss_det_cls", "loss_det_box_reg"}
    logged = [m for m in metrics if "total_loss" in m]
    assert max(m["iteration"] for m in logged) == 2
    assert names <= set(logged[-1]) and all(math.isfinite(logged[-1][k]) for k in names)
    # statistics go to the event storage, not into the summed loss dict
    assert "padet/det_num_pos_per_image" in logged[-1]
    (evaluated,) = [m for m in metrics if "bbox/AP" in m]
    assert {"bbox/AP50", "bbox/AP75"} <= set(evaluated)
    assert (out / "model_final.pth").is_file()
