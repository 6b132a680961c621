"""RGA / PRM shapes configs through train_net.py; RGA's tensor gradient hooks also work on
detectron2 v0.6, which has no ``after_backward`` hook."""
import json
import math

import pytest
import torch

import train_net
from detectron2.engine import HookBase
from rga_prm import GradientAnnealingHook
from tests.conftest import TINY_VAL, config_path, read_metrics, run_train_net, train_net_args

FEW_ITERS = ["SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
             "SOLVER.STEPS", "(2,)", "SOLVER.CHECKPOINT_PERIOD", "100",
             "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
CONFIGS = ["rga_R_18_FPN.yaml", "rga_prm_R_18_FPN.yaml", "iou_uniform_rga_prm_R_18_FPN.yaml"]


@pytest.mark.parametrize("config", CONFIGS)
def test_shapes_config_trains_logs_lambda_and_evaluates(tiny_shapes, tmp_path, config):
    out = tmp_path / "run"
    run_train_net(config_path("shapes", config), out, *FEW_ITERS)
    metrics = read_metrics(out)
    losses = {k: v for m in metrics for k, v in m.items() if k.startswith("loss")}
    assert losses and all(math.isfinite(v) for v in losses.values())
    # written at the last iteration t = 2 of T = 3; never part of the loss dict
    assert [m["rga/lambda"] for m in metrics if "rga/lambda" in m] == [7.0 - 6.0 * 2 / 3]
    (logged,) = [m for m in metrics if "bbox/AP" in m]
    assert math.isfinite(logged["bbox/AP50"])
    if "prm" in config:
        assert {"loss_cls_m0", "loss_cls_m1"} <= set(losses)
        # per-module evaluation (Tables 1 and 5): each module alone, then the ensemble
        preds = []
        for module in ("0", "1"):
            eval_dir = tmp_path / f"eval{module}"
            run_train_net(config_path("shapes", config), eval_dir, "MODEL.WEIGHTS",
                          str(out / "model_final.pth"), "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
                          "0.0", "MODEL.PRM.TEST_MODULE", module, eval_only=True)
            preds.append(json.load(open(eval_dir / "inference" / TINY_VAL /
                                        "coco_instances_results.json")))
        preds.append(json.load(open(out / "inference" / TINY_VAL / "coco_instances_results.json")))
        assert all(preds) and preds[0] != preds[1] and preds[2] not in preds[:2]  # 2: ensemble


class _RecordFirstStepGradients(HookBase):
    def after_step(self):
        if self.trainer.iter == 0:
            self.grads = {n: p.grad.clone() for n, p in self.trainer.model.named_parameters()
                          if p.grad is not None}


def _first_step_gradients(tmp_path, rga):
    args = train_net_args(
        config_path("shapes", "rga_prm_R_18_FPN.yaml"), tmp_path / f"rga{rga}",
        "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2", "SEED", "7",
        "SOLVER.CLIP_GRADIENTS.ENABLED", "False",  # clipping would rewrite .grad in place
        "DATASETS.TEST", "()", "MODEL.RGA.ENABLED", str(rga))
    trainer = train_net.Trainer(train_net.setup(args))
    rga_hooks = [h for h in trainer._hooks if isinstance(h, GradientAnnealingHook)]
    assert len(rga_hooks) == int(rga)
    recorder = _RecordFirstStepGradients()
    trainer.register_hooks([recorder])
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert all(not h._handles for h in rga_hooks)  # removed after training
    return recorder.grads, trainer.model


def test_train_net_run_scales_only_rcnn_gradients(tiny_shapes, tmp_path):
    reference, _ = _first_step_gradients(tmp_path, rga=False)
    scaled, model = _first_step_gradients(tmp_path, rga=True)
    assert set(reference) == set(scaled)
    for name in reference:
        if name.startswith(("roi_heads.box_head.", "roi_heads.box_predictor.")):
            torch.testing.assert_close(scaled[name], 7.0 * reference[name], rtol=1e-6, atol=0)
        else:
            assert torch.equal(scaled[name], reference[name]), name
