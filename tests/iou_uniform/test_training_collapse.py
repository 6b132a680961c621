"""The training collapse of IoU-uniform R-CNN on the primitives dataset
(docs/iou_uniform.md#training-collapse): with the shipped config the regression tower keeps its
ReLU units alive. Without GroupNorm in the FPN, seed 1 lost 97% of the first FC's units by
iteration 300 (79% by iteration 200 with 256 px inputs, 0.2% of unit x sample outputs still
above 0) and its box loss never moved."""
import os

from d2ext.tooling import load_trained_model
from iou_uniform.analysis import tower_activity
from tests.conftest import config_path, run_train_net
from train_net import load_config


def test_regression_tower_of_the_shipped_primitives_config_stays_alive(tmp_path):
    """200 iterations of the shipped config with seed 1 (about 3 minutes on 2 CPU cores), then
    the towers on the generated samples of 16 training images."""
    run_train_net(config_path("primitives", "iou_uniform_R_18_FPN.yaml"), tmp_path,
                  "SEED", "1", "SOLVER.MAX_ITER", "200", "COLLAPSE_CHECK.ENABLED", "False",
                  "DATASETS.TEST", "()", datasets=("primitives_train", "primitives_val"))
    cfg = load_config(str(tmp_path / "config.yaml"),
                      ["MODEL.WEIGHTS", os.path.join(tmp_path, "model_final.pth")])
    layers = tower_activity(cfg, load_trained_model(cfg), 16)["layers"]
    for name in ("reg.fc_relu1", "reg.fc_relu2", "cls.fc_relu1", "cls.fc_relu2"):
        assert layers[name]["dead_fraction"] < 0.05, (name, layers[name])
        assert layers[name]["active_fraction"] > 0.1, (name, layers[name])
