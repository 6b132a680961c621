"""Seeded training is reproducible on CPU: the shipped shapes and primitives configs set SEED, and
two fresh processes training the same config with the same thread count compute identical losses
at every iteration and the same AP (docs/training.md#determinism)."""
import glob
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, config_path
from train_net import load_config

_DRIVER = """
import json, sys
import train_net
from d2ext.datasets.shapes import register_shapes_split
from detectron2.engine import default_argument_parser
from tests.conftest import TINY_TRAIN, TINY_VAL

root, out, result_file, config, *opts = sys.argv[1:]
register_shapes_split(TINY_TRAIN, 12, seed=10, root=root)
register_shapes_split(TINY_VAL, 6, seed=11, root=root)
args = default_argument_parser().parse_args([
    "--config-file", config, "OUTPUT_DIR", out,
    "DATASETS.TRAIN", f"('{TINY_TRAIN}',)", "DATASETS.TEST", f"('{TINY_VAL}',)",
    "MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "10",
    "SOLVER.STEPS", "(40,)", "SOLVER.CHECKPOINT_PERIOD", "100",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", *opts])
trainer = train_net.Trainer(train_net.setup(args))
trainer.resume_or_load(resume=False)
trainer.train()
results = train_net.Trainer.test(trainer.cfg, trainer.model)
s = trainer.storage
losses = {k: {it: v for v, it in s.history(k).values()}
          for k in s.histories() if k.startswith(("loss", "total_loss"))}
json.dump({"seed": trainer.cfg.SEED, "losses": losses, "results": results},
          open(result_file, "w"))
"""


def _train(tmp_path, name, iters, *opts):
    """``iters`` iterations of the shipped shapes Faster R-CNN config (its SEED, its data-loader
    worker) on the tiny shapes splits, in a fresh process; returns its losses and evaluation."""
    result = tmp_path / f"{name}.json"
    argv = [str(tmp_path / "shapes"), str(tmp_path / name), str(result),
            config_path("shapes", "faster_rcnn_R_18_FPN.yaml"), "SOLVER.MAX_ITER", str(iters),
            *opts]
    proc = subprocess.run([sys.executable, "-c", _DRIVER, *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(result.read_text())


CPU_CONFIGS = [p for folder in ("shapes", "primitives")
               for p in glob.glob(os.path.join(REPO, "configs", folder, "*.yaml"))]


@pytest.mark.parametrize("config", sorted(os.path.relpath(p, REPO) for p in CPU_CONFIGS))
def test_every_embedded_dataset_config_sets_a_seed(config):
    assert load_config(os.path.join(REPO, config)).SEED >= 0


def test_same_seed_same_losses_and_ap_another_seed_differs(tmp_path):
    first, second = _train(tmp_path, "first", 50), _train(tmp_path, "second", 50)
    assert first["seed"] == load_config(config_path("shapes", "faster_rcnn_R_18_FPN.yaml")).SEED
    assert "loss_cls" in first["losses"]
    assert all(len(per_iter) == 50 for per_iter in first["losses"].values())
    assert first["losses"] == second["losses"]
    # compared as JSON text: NaN (COCO's APl with no large object) is not equal to itself
    assert json.dumps(first["results"], sort_keys=True) == json.dumps(second["results"],
                                                                      sort_keys=True)
    assert "AP" in first["results"]["bbox"]

    # the comparison can fail: another seed changes the first iterations' losses
    other = _train(tmp_path, "other", 5, "SEED", str(first["seed"] + 1))
    assert other["losses"]["total_loss"] != {
        it: v for it, v in first["losses"]["total_loss"].items() if int(it) < 5}
