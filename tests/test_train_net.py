"""train_net.py end to end on the tiny shapes splits: train, evaluate, --eval-only, --resume."""
import json
import math
import os

import pytest
import torch

import train_net
from detectron2.engine import HookBase
from tests.conftest import TINY_VAL, config_path, read_metrics, run_train_net, train_net_args

FEW_ITERS = ["SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
             "SOLVER.STEPS", "(2,)", "SOLVER.CHECKPOINT_PERIOD", "100"]
# score threshold 0 so that even a barely trained model makes detections to evaluate
SCORE_ALL = {
    "faster_rcnn_R_18_FPN.yaml": ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"],
    "retinanet_R_18_FPN.yaml": ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"],
}


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-9


@pytest.mark.parametrize("config", sorted(SCORE_ALL))
def test_shapes_config_trains_evaluates_and_eval_only_reproduces(tiny_shapes, tmp_path, config):
    out = tmp_path / "run"
    cfg_file = config_path("shapes", config)
    run_train_net(cfg_file, out, *FEW_ITERS, *SCORE_ALL[config])
    metrics = read_metrics(out)
    losses = {k: v for m in metrics for k, v in m.items() if "loss" in k}
    assert losses and all(math.isfinite(v) for v in losses.values())
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == 2
    # the final evaluation is logged to metrics.json, AP at every IoU threshold included
    (logged,) = [m for m in metrics if "bbox/AP" in m]
    bbox = {k[len("bbox/"):]: v for k, v in logged.items() if k.startswith("bbox/")}
    assert {"AP", "AP50", "AP75", "AP60", "AP70", "AP80", "AP90"} <= set(bbox)
    weights = out / "model_final.pth"
    assert weights.is_file()

    again = run_train_net(cfg_file, tmp_path / "eval", *SCORE_ALL[config],
                          "MODEL.WEIGHTS", str(weights), eval_only=True)["bbox"]
    assert set(again) >= set(bbox)
    assert all(_same(again[k], bbox[k]) for k in bbox), (again, bbox)
    preds = [json.load(open(d / "inference" / TINY_VAL / "coco_instances_results.json"))
             for d in (out, tmp_path / "eval")]
    assert len(preds[0]) > 0 and preds[0] == preds[1]


class _Interrupt(Exception):
    pass


class _InterruptAfter(HookBase):
    """Records the momentum buffers after ``record_iter`` and stops the run after ``stop_iter``."""

    def __init__(self, record_iter, stop_iter):
        self.record_iter, self.stop_iter, self.momentum = record_iter, stop_iter, None

    def after_step(self):
        if self.trainer.iter == self.record_iter:
            state = self.trainer._trainer.optimizer.state_dict()["state"]
            self.momentum = {i: s["momentum_buffer"].clone() for i, s in state.items()}
        if self.trainer.iter == self.stop_iter:
            raise _Interrupt()


def _trainer(out, resume):
    args = train_net_args(
        config_path("shapes", "faster_rcnn_R_18_FPN.yaml"), out,
        "SOLVER.MAX_ITER", "5", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "(3,)", "SOLVER.CHECKPOINT_PERIOD", "2", resume=resume,
    )
    trainer = train_net.Trainer(train_net.setup(args))
    trainer.resume_or_load(resume=resume)
    return trainer


def test_resume_continues_at_saved_iteration_with_saved_optimizer_state(tiny_shapes, tmp_path):
    out = tmp_path / "run"
    first = _trainer(out, resume=False)
    hook = _InterruptAfter(record_iter=1, stop_iter=2)  # checkpoint written after iter 1
    first.register_hooks([hook])
    with pytest.raises(_Interrupt):
        first.train()
    assert (out / "last_checkpoint").read_text().strip() == "model_0000001.pth"
    assert not (out / "model_final.pth").exists()

    with pytest.raises(FileExistsError, match="--resume"):
        _trainer(out, resume=False)  # a fresh run would overwrite the interrupted one

    resumed = _trainer(out, resume=True)
    assert resumed.start_iter == 2
    state = resumed._trainer.optimizer.state_dict()["state"]
    assert hook.momentum and set(state) == set(hook.momentum)
    for i, buf in hook.momentum.items():
        assert torch.equal(state[i]["momentum_buffer"], buf)
    assert resumed.scheduler.last_epoch == 2
    resumed.train()
    assert resumed.iter == 5 and (out / "model_final.pth").is_file()


def test_eval_only_needs_existing_weights(tiny_shapes, tmp_path):
    cfg_file = config_path("shapes", "faster_rcnn_R_18_FPN.yaml")
    with pytest.raises(ValueError, match="MODEL.WEIGHTS"):
        run_train_net(cfg_file, tmp_path, eval_only=True)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        run_train_net(cfg_file, tmp_path, "MODEL.WEIGHTS", str(tmp_path / "missing.pth"),
                      eval_only=True)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        run_train_net(cfg_file, tmp_path / "train", "MODEL.WEIGHTS", str(tmp_path / "missing.pth"))
    assert not os.path.exists(tmp_path / "train" / "last_checkpoint")
