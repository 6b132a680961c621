"""d2ext.collapse_check: the rule on synthetic and on real healthy loss series, the hook on the
event storage, and train_net.py stopping a run whose loss does not move."""
import types

import numpy as np
import pytest

from d2ext.collapse_check import (
    MEDIAN_LENGTH,
    Collapse,
    CollapseCheckHook,
    TrainingCollapseError,
    end_iter_of,
    find_collapse,
    find_collapse_in_medians,
)
from detectron2.utils.events import EventStorage
from tests.conftest import config_path, read_metrics, run_train_net
from train_net import load_config

WINDOW, MIN_CHANGE = 200, 0.02  # the defaults of COLLAPSE_CHECK

# Real healthy runs of the shapes ablations (tools/ablate.py, seed 1, CPU): loss_box_reg of
# metrics.json, the 20-iteration median at iterations 19, 39, ..., up to the first LR decay
# (SOLVER.STEPS[0] = 820), where the check ends. Faster R-CNN's rises to 0.63 by iteration 99
# and then stays between 0.61 and 0.75: its batch-to-batch noise (its number of foreground
# RoIs varies) keeps its median from looking flat.
HEALTHY_FASTER_RCNN = [
    0.1965, 0.4106, 0.3353, 0.5192, 0.6288, 0.6238, 0.6652, 0.6526, 0.6354, 0.6729, 0.6834,
    0.7124, 0.6874, 0.7092, 0.7126, 0.7009, 0.7392, 0.7018, 0.7380, 0.7448, 0.6827, 0.6921,
    0.6822, 0.7268, 0.6885, 0.6912, 0.6945, 0.7007, 0.6796, 0.7061, 0.6553, 0.6728, 0.6664,
    0.6844, 0.6434, 0.6700, 0.6310, 0.6506, 0.6571, 0.6286, 0.6152,
]


def _logged(medians):
    """(iteration, median) pairs as metrics.json holds them: iterations 19, 39, ..."""
    return [(MEDIAN_LENGTH * (i + 1) - 1, m) for i, m in enumerate(medians)]


def _collapse_after_a_fall(seed, noise=0.03, iters=1100):
    """A loss falling from 1.0 to 0.62 over iterations 0-19 that then stays at 0.60, with
    Gaussian batch noise of ``noise`` (relative): the collapse reported for IoU-uniform R-CNN."""
    rng = np.random.default_rng(seed)
    flat = 0.6 * (1 + noise * rng.standard_normal(iters - 20))
    return np.concatenate([np.linspace(1.0, 0.62, 20), flat])


def test_constant_loss_collapses_after_one_window():
    assert find_collapse([0.6] * 300, WINDOW, MIN_CHANGE) == Collapse(0, 200, 0.6, MIN_CHANGE)
    assert find_collapse([0.6] * 300, WINDOW, MIN_CHANGE, start_iter=50).last_iter == 250
    assert find_collapse([0.6] * 200, WINDOW, MIN_CHANGE) is None  # less than a window
    assert find_collapse([0.0] * 201, WINDOW, MIN_CHANGE).center == 0.0  # stuck at zero too


def test_collapse_message_names_the_loss_and_the_stretch():
    text = Collapse(19, 219, 0.6012, 0.02).describe("loss_box_reg")
    assert text == ("loss_box_reg has stayed within 2% of 0.601 for 200 iterations "
                    "(iterations 19-219, 20-iteration medians)")


@pytest.mark.parametrize("seed", range(5))
def test_flat_loss_with_batch_noise_collapses_a_window_after_it_stops(seed):
    """+-3% noise: the 20-iteration medians stay within +-2% of 0.60 from about iteration 29
    (the first median with a majority of flat values), so the rule fires at about 229."""
    found = find_collapse(_collapse_after_a_fall(seed), WINDOW, MIN_CHANGE)
    assert found is not None
    assert 229 <= found.last_iter <= 300, found
    assert found.first_iter == found.last_iter - WINDOW
    assert found.center == pytest.approx(0.6, rel=0.01)


def test_decreasing_loss_does_not_collapse():
    t = np.arange(1100)
    rng = np.random.default_rng(0)
    loss = (0.3 + 0.9 * np.exp(-t / 300)) * (1 + 0.03 * rng.standard_normal(len(t)))
    assert find_collapse(loss, WINDOW, MIN_CHANGE) is None


def test_rising_then_plateau_with_faster_rcnn_batch_noise_does_not_collapse():
    """Faster R-CNN's box loss rises, then plateaus. Its logged 20-iteration medians vary by
    3.6% (std) on the plateau, about what +-13% Gaussian noise per iteration gives."""
    t = np.arange(820)
    rng = np.random.default_rng(0)
    loss = np.minimum(0.2 + 0.005 * t, 0.7) * (1 + 0.13 * rng.standard_normal(len(t)))
    assert find_collapse(loss, WINDOW, MIN_CHANGE) is None


def test_real_healthy_runs_do_not_collapse():
    """Every logged window of 180 iterations holds a subset of the medians of any 200-iteration
    window of the run, so no collapse in these means the check would not have fired."""
    medians = _logged(HEALTHY_FASTER_RCNN)
    assert medians[-1][0] == 819
    assert find_collapse_in_medians(medians, WINDOW - MEDIAN_LENGTH, MIN_CHANGE) is None
    # the margin: its flattest 180 iterations still span +-3.3%
    assert find_collapse_in_medians(medians, WINDOW - MEDIAN_LENGTH, 0.033) is None
    assert find_collapse_in_medians(medians, WINDOW - MEDIAN_LENGTH, 0.034) is not None


def _run_hook(hook, losses):
    """Feed ``losses`` (one dict of scalars per iteration) to ``hook`` through an EventStorage,
    as the trainer does; returns the last iteration it saw."""
    trainer = hook.trainer = types.SimpleNamespace(iter=0)
    with EventStorage(0) as trainer.storage:
        for trainer.iter, scalars in enumerate(losses):
            trainer.storage.iter = trainer.iter
            trainer.storage.put_scalars(**scalars, total_loss=sum(scalars.values()))
            hook.after_step()
    return trainer.iter


def test_hook_watches_the_first_loss_logged_summed_over_its_stages():
    stages = [{"loss_cls_stage0": 1.0 / (i + 1), "loss_box_reg_stage0": 0.3 + 0.01 * (i % 2),
               "loss_box_reg_stage1": 0.3 - 0.01 * (i % 2)} for i in range(10)]  # sum: 0.6
    hook = CollapseCheckHook(["loss_box_reg"], window=5, min_change=0.001)
    with pytest.raises(TrainingCollapseError, match=r"collapsed: loss_box_reg_stage0 \+ "
                       r"loss_box_reg_stage1 has stayed within 0.1% of 0.6 for 5 iterations "
                       r"\(iterations 0-5"):
        _run_hook(hook, stages)
    padet = [{"loss_det_cls": 1.0 / (i + 1), "loss_det_box_reg": 0.6} for i in range(10)]
    with pytest.raises(TrainingCollapseError, match="loss_det_box_reg has stayed"):
        _run_hook(CollapseCheckHook(["loss_box_reg", "loss_det_box_reg"], 5, 0.001), padet)


def test_hook_stops_checking_at_end_iter():
    flat = [{"loss_box_reg": 0.6}] * 20
    assert _run_hook(CollapseCheckHook(["loss_box_reg"], 5, 0.02, end_iter=5), flat) == 19
    with pytest.raises(TrainingCollapseError):
        _run_hook(CollapseCheckHook(["loss_box_reg"], 5, 0.02, end_iter=6), flat)


def test_check_ends_at_end_iter_or_at_the_first_lr_decay():
    faster_rcnn = config_path("shapes", "faster_rcnn_R_18_FPN.yaml")  # SOLVER.STEPS (820, 1000)
    assert end_iter_of(load_config(faster_rcnn)) == 820
    assert end_iter_of(load_config(faster_rcnn, ["COLLAPSE_CHECK.END_ITER", "300"])) == 300
    assert end_iter_of(load_config(faster_rcnn, ["SOLVER.STEPS", "()"])) == 1000


def test_hook_refuses_a_loss_the_model_does_not_log_at_the_first_iteration():
    hook = CollapseCheckHook(["loss_iou"], window=5, min_change=0.02)
    with pytest.raises(ValueError, match=r"COLLAPSE_CHECK.LOSS = \['loss_iou'\]: the model logs "
                       r"no such loss \(its losses: loss_box_reg, loss_cls, total_loss\)"):
        _run_hook(hook, [{"loss_cls": 1.0, "loss_box_reg": 0.5}])


@pytest.mark.parametrize("key, value", [("WINDOW", 0), ("MIN_CHANGE", -0.1)])
def test_hook_refuses_invalid_settings(key, value):
    kwargs = {"loss": ["loss_box_reg"], "window": 200, "min_change": 0.02, key.lower(): value}
    with pytest.raises(ValueError, match=f"COLLAPSE_CHECK.{key} = {value}"):
        CollapseCheckHook(**kwargs)


# a few iterations of train_net.py on the tiny shapes splits
SHORT_RUN = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "(4,)"]
FASTER_RCNN = config_path("shapes", "faster_rcnn_R_18_FPN.yaml")


def test_train_net_stops_a_run_whose_loss_does_not_move_and_keeps_its_checkpoints(
        tiny_shapes, tmp_path):
    """A band so wide that any loss stays in it: the run stops after WINDOW iterations."""
    out = tmp_path / "run"
    with pytest.raises(TrainingCollapseError, match="training collapsed: loss_box_reg has "
                       r"stayed within 10000% of .* for 2 iterations \(iterations 0-2"):
        run_train_net(FASTER_RCNN, out, *SHORT_RUN, "SOLVER.MAX_ITER", "6",
                      "SOLVER.CHECKPOINT_PERIOD", "2", "COLLAPSE_CHECK.WINDOW", "2",
                      "COLLAPSE_CHECK.MIN_CHANGE", "100.0")
    assert (out / "last_checkpoint").read_text().strip() == "model_0000001.pth"
    assert (out / "model_0000001.pth").is_file() and not (out / "model_final.pth").exists()
    # detectron2's writers still wrote the iterations that ran
    assert max(m["iteration"] for m in read_metrics(out) if "loss_box_reg" in m) == 2


def test_train_net_default_check_lets_a_short_run_finish(tiny_shapes, tmp_path):
    out = tmp_path / "run"
    run_train_net(FASTER_RCNN, out, *SHORT_RUN, "SOLVER.MAX_ITER", "5")
    assert (out / "model_final.pth").is_file()


def test_train_net_refuses_a_loss_the_model_does_not_log_unless_disabled(tiny_shapes, tmp_path):
    missing = ["SOLVER.MAX_ITER", "2", "COLLAPSE_CHECK.LOSS", "['loss_det_box_reg']"]
    with pytest.raises(ValueError, match=r"COLLAPSE_CHECK.LOSS = \['loss_det_box_reg'\]: the "
                       r"model logs no such loss \(its losses: loss_box_reg, loss_cls, "):
        run_train_net(FASTER_RCNN, tmp_path / "on", *SHORT_RUN, *missing)
    run_train_net(FASTER_RCNN, tmp_path / "off", *SHORT_RUN, *missing,
                  "COLLAPSE_CHECK.ENABLED", "False")
    assert (tmp_path / "off" / "model_final.pth").is_file()
