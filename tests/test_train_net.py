"""train_net.py end to end on the tiny shapes splits: train, evaluate, --eval-only, --resume,
the run guard. d2ext.run_state's parts on their own: tests/test_run_state.py."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import train_net
from detectron2.engine import HookBase
from tests.conftest import (
    REPO, TINY_VAL, config_path, read_metrics, run_train_net, train_net_args
)

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


def _files(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_resume_continues_at_saved_iteration_with_saved_optimizer_state(tiny_shapes, tmp_path):
    out = tmp_path / "run"
    first = _trainer(out, resume=False)
    hook = _InterruptAfter(record_iter=1, stop_iter=2)  # checkpoint written after iter 1
    first.register_hooks([hook])
    with pytest.raises(_Interrupt):
        first.train()
    assert (out / "last_checkpoint").read_text().strip() == "model_0000001.pth"
    assert not (out / "model_final.pth").exists()

    old_run = _files(out)
    assert {"config.yaml", "log.txt", "metrics.json", "model_0000001.pth"} <= set(old_run)
    with pytest.raises(FileExistsError, match=f"{out}.*--resume.*another OUTPUT_DIR"):
        _trainer(out, resume=False)  # a fresh run would overwrite the interrupted one
    assert _files(out) == old_run  # refused before anything is written

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


def test_refused_fresh_run_writes_nothing(tmp_path):
    """Each run file alone refuses a fresh run before setup() writes anything (config.yaml,
    log.txt); --resume and --eval-only set up; --eval-only leaves config.yaml as it is."""
    cfg_file = config_path("shapes", "faster_rcnn_R_18_FPN.yaml")
    for name in ("model_0000009.pth", "model_final.pth", "last_checkpoint", "metrics.json",
                 "config.yaml"):
        out = tmp_path / name
        out.mkdir()
        (out / "log.txt").write_text("old log\n")
        (out / name).write_text("old run")
        with pytest.raises(FileExistsError, match=str(out)):
            train_net.setup(train_net_args(cfg_file, out))
        assert _files(out) == {"log.txt": b"old log\n", name: b"old run"}
    out = tmp_path / "config.yaml"
    train_net.setup(train_net_args(cfg_file, out, "MODEL.WEIGHTS", "x.pth", eval_only=True))
    assert (out / "config.yaml").read_bytes() == b"old run"
    cfg = train_net.setup(train_net_args(cfg_file, out, resume=True))
    assert (out / "config.yaml").read_text() == cfg.dump()  # written whole, atomically


# train_net.py in a fresh process on the tiny shapes splits, seeded, one thread, no loader
# workers; evaluating and checkpointing every 10 iterations. argv: shapes root, OUTPUT_DIR,
# the iteration after whose checkpoint the process is killed (-1: none), resume (0/1), and
# where to write the raw losses of every iteration the process trained.
_DRIVER = """
import json, os, sys
import torch
torch.set_num_threads(1)
import train_net
from d2ext.datasets.shapes import register_shapes_split
from detectron2.engine import HookBase, hooks
from tests.conftest import TINY_TRAIN, TINY_VAL, config_path, train_net_args

root, out, kill_after, resume, losses_file = sys.argv[1:]
register_shapes_split(TINY_TRAIN, 12, seed=10, root=root)
register_shapes_split(TINY_VAL, 6, seed=11, root=root)


class Kill(HookBase):
    def after_step(self):
        if self.trainer.iter == int(kill_after):
            os._exit(3)


class Trainer(train_net.Trainer):
    def build_hooks(self):  # the kill right after the checkpointer, before the evaluation
        ret = super().build_hooks()
        i = next(i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicCheckpointer))
        return ret[:i + 1] + [Kill()] + ret[i + 1:]


args = train_net_args(
    config_path("shapes", "faster_rcnn_R_18_FPN.yaml"), out, "SEED", "1",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "20", "SOLVER.CHECKPOINT_PERIOD", "10",
    "TEST.EVAL_PERIOD", "10", "DATALOADER.ASPECT_RATIO_GROUPING", "False",
    resume=resume == "1")
trainer = Trainer(train_net.setup(args))
trainer.resume_or_load(resume=args.resume)
trainer.train()
s = trainer.storage
losses = {k: dict((it, v) for v, it in s.history(k).values())
          for k in s.histories() if k.startswith(("loss", "total_loss"))}
json.dump({"start_iter": trainer.start_iter, "losses": losses}, open(losses_file, "w"))
"""


def _run_driver(tmp_path, out, kill_after=-1, resume=False):
    losses = tmp_path / f"losses_{out.name}_{int(resume)}.json"
    argv = [str(tmp_path / "shapes"), str(out), str(kill_after), str(int(resume)), str(losses)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _DRIVER, *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc, losses


def test_killed_after_checkpoint_keeps_metrics_and_resumes_exactly(tmp_path):
    """Killed (os._exit) right after the checkpoint of iteration 9: metrics.json holds the
    records up to iteration 9; --resume trains iterations 10-19 with the same losses as the run
    that was never interrupted (sampler position, RNG states; the evaluation at iteration 9 of
    the uninterrupted run draws nothing from the training RNG)."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    proc, whole_losses = _run_driver(tmp_path, whole)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, _ = _run_driver(tmp_path, killed, kill_after=9)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert (killed / "last_checkpoint").read_text().strip() == "model_0000009.pth"
    (record,) = [m for m in read_metrics(killed) if "total_loss" in m]
    (expected,) = [m for m in read_metrics(whole) if m["iteration"] == 9 and "total_loss" in m]
    assert record["iteration"] == 9
    assert {k: v for k, v in record.items() if "loss" in k} == {
        k: v for k, v in expected.items() if "loss" in k}

    proc, resumed_losses = _run_driver(tmp_path, killed, resume=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    whole_run, resumed = (json.loads(p.read_text()) for p in (whole_losses, resumed_losses))
    assert resumed["start_iter"] == 10
    assert set(resumed["losses"]) == set(whole_run["losses"]) and "loss_cls" in resumed["losses"]
    for name, per_iter in resumed["losses"].items():
        assert sorted(per_iter) == [str(i) for i in range(10, 20)]
        for it, value in per_iter.items():
            assert value == whole_run["losses"][name][it], (name, it)
