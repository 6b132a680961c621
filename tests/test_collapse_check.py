"""d2ext.collapse_check: the rule on synthetic and on real loss series (collapsed and healthy),
the hook on the event storage, and train_net.py stopping a run whose loss does not move."""
import types

import numpy as np
import pytest

from d2ext.collapse_check import (
    MEDIAN_LENGTH,
    Collapse,
    CollapseCheckHook,
    TrainingCollapseError,
    find_collapse,
    find_collapse_in_medians,
)
from detectron2.utils.events import EventStorage
from tests.conftest import config_path, read_metrics, run_train_net
from train_net import load_config

WINDOW, MIN_CHANGE = 250, 0.10  # the defaults of COLLAPSE_CHECK
FIRST = MEDIAN_LENGTH - 1  # the iteration of the first 20-iteration median, the start

# Real runs (tools/ablate.py, CPU): loss_box_reg of metrics.json, the 20-iteration median at
# iterations 19, 39, ..., 299 (docs/training.md#collapse-check).
# IoU-uniform R-CNN on primitives that collapsed (AP 1.1-2.9 after 300 iterations; up to 97% of
# the regression tower's first FC dead): 128 px without FPN norm, seeds 1-3, and the config
# before the GN fix (256 px, no FPN norm), seeds 1 and 3.
COLLAPSED = {
    "128px_no_gn_seed1": [0.6061, 0.6103, 0.5973, 0.5856, 0.5868, 0.5966, 0.5942, 0.5981, 0.6006,
                          0.5889, 0.5995, 0.6007, 0.5964, 0.6071, 0.6045],
    "128px_no_gn_seed2": [0.6074, 0.5988, 0.5878, 0.5907, 0.5919, 0.5907, 0.5884, 0.5940, 0.5929,
                          0.5945, 0.6005, 0.5951, 0.5837, 0.5841, 0.5650],
    "128px_no_gn_seed3": [0.6158, 0.6061, 0.5814, 0.5830, 0.5943, 0.5920, 0.5997, 0.5946, 0.5983,
                          0.6034, 0.5780, 0.6004, 0.6005, 0.5828, 0.5723],
    "before_fix_seed1": [0.6101, 0.6017, 0.5924, 0.5940, 0.5858, 0.5874, 0.5876, 0.5906, 0.5888,
                         0.6103, 0.6067, 0.5892, 0.5941, 0.6054, 0.6047],
    "before_fix_seed3": [0.6093, 0.6012, 0.5860, 0.5577, 0.5893, 0.5901, 0.5956, 0.5831, 0.5817,
                         0.5875, 0.6054, 0.5868, 0.5836, 0.5897, 0.5538],
}
# Healthy runs. IoU-uniform R-CNN, seed 1: on shapes the slowest start of all the healthy
# IoU-uniform runs (it leaves the band at iteration 199); on primitives, the shipped config.
HEALTHY = {
    "shapes_iou_uniform_seed1": [0.6584, 0.6550, 0.6343, 0.6449, 0.6197, 0.6395, 0.6239, 0.6089,
                                 0.5960, 0.5853, 0.5590, 0.5258, 0.5353, 0.5239, 0.5105],
    "primitives_iou_uniform_seed1": [0.6058, 0.5969, 0.5999, 0.5824, 0.5452, 0.5643, 0.5396,
                                     0.5159, 0.5111, 0.4947, 0.4569, 0.4346, 0.4202, 0.4094,
                                     0.3893],
    # Faster R-CNN on shapes, up to its first LR decay (iteration 820): the box loss rises to
    # 0.63 by iteration 99 and then stays between 0.61 and 0.75, within +-10% of 0.68 for
    # hundreds of iterations, so the band must be anchored at the start.
    "shapes_faster_rcnn_seed1": [
        0.1965, 0.4106, 0.3353, 0.5192, 0.6288, 0.6238, 0.6652, 0.6526, 0.6354, 0.6729, 0.6834,
        0.7124, 0.6874, 0.7092, 0.7126, 0.7009, 0.7392, 0.7018, 0.7380, 0.7448, 0.6827, 0.6921,
        0.6822, 0.7268, 0.6885, 0.6912, 0.6945, 0.7007, 0.6796, 0.7061, 0.6553, 0.6728, 0.6664,
        0.6844, 0.6434, 0.6700, 0.6310, 0.6506, 0.6571, 0.6286, 0.6152],
}


def _logged(medians):
    """(iteration, median) pairs as metrics.json holds them: iterations 19, 39, ..."""
    return [(MEDIAN_LENGTH * (i + 1) - 1, m) for i, m in enumerate(medians)]


def test_constant_loss_collapses_one_window_after_its_start():
    assert find_collapse([0.6] * 300, WINDOW, MIN_CHANGE) == Collapse(19, 269, 0.6, MIN_CHANGE)
    assert find_collapse([0.6] * 400, WINDOW, MIN_CHANGE, start_iter=50).last_iter == 319
    assert find_collapse([0.6] * 269, WINDOW, MIN_CHANGE) is None  # the window is not over
    assert find_collapse([0.0] * 270, WINDOW, MIN_CHANGE).start == 0.0  # stuck at zero too


def test_collapse_message_names_the_loss_its_start_and_the_stretch():
    text = Collapse(19, 269, 0.6061, 0.1).describe("loss_box_reg")
    assert text == ("loss_box_reg has stayed within 10% of its start, 0.606, for 250 iterations "
                    "(iterations 19-269, 20-iteration medians)")


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("noise", [0.03, 0.05])
def test_flat_loss_with_batch_noise_collapses_at_the_end_of_the_window(seed, noise):
    """A loss at 0.60 from the first iteration with Gaussian batch noise of +-3% or +-5% per
    iteration (the collapsed runs' logged medians vary by about +-1.5%, what +-5% gives): its
    20-iteration medians stay within +-10% of the first one (in 200 of 200 draws)."""
    rng = np.random.default_rng(seed)
    found = find_collapse(0.6 * (1 + noise * rng.standard_normal(1000)), WINDOW, MIN_CHANGE)
    assert found is not None and (found.first_iter, found.last_iter) == (FIRST, FIRST + WINDOW)
    assert found.start == pytest.approx(0.6, rel=0.1)


def test_decreasing_loss_does_not_collapse():
    t = np.arange(1100)
    rng = np.random.default_rng(0)
    loss = (0.3 + 0.9 * np.exp(-t / 300)) * (1 + 0.03 * rng.standard_normal(len(t)))
    assert find_collapse(loss, WINDOW, MIN_CHANGE) is None


def test_loss_that_moves_and_then_levels_off_is_never_stopped():
    """The band is anchored at the start: rising (or falling) out of it, then staying flat for
    ever, as Faster R-CNN's box loss does, is healthy."""
    t = np.arange(3000)
    rng = np.random.default_rng(0)
    noise = 1 + 0.03 * rng.standard_normal(len(t))
    assert find_collapse(np.minimum(0.2 + 0.005 * t, 0.7) * noise, WINDOW, MIN_CHANGE) is None
    assert find_collapse(np.maximum(0.7 - 0.005 * t, 0.2) * noise, WINDOW, MIN_CHANGE) is None


@pytest.mark.parametrize("run", sorted(COLLAPSED))
def test_real_collapsed_runs_are_stopped(run):
    """Logged medians are a subset of those the check sees; the check stops these runs by
    iteration 269 (the logged medians show it at 279), inside a 300-iteration collapse check."""
    found = find_collapse_in_medians(_logged(COLLAPSED[run]), WINDOW, MIN_CHANGE)
    assert found is not None and (found.first_iter, found.last_iter) == (19, 279)


@pytest.mark.parametrize("run", sorted(HEALTHY))
def test_real_healthy_runs_are_not_stopped(run):
    """metrics.json holds a subset of the medians the check sees, so no collapse in these
    means the check would not have stopped the run."""
    assert find_collapse_in_medians(_logged(HEALTHY[run]), WINDOW, MIN_CHANGE) is None


def test_margin_of_the_slowest_healthy_start():
    """Shapes IoU-uniform seed 1 leaves the band at iteration 199: a window of 180 iterations
    would have stopped it, 250 leaves a margin of 70."""
    medians = _logged(HEALTHY["shapes_iou_uniform_seed1"])
    assert find_collapse_in_medians(medians, 180, MIN_CHANGE) is None
    assert find_collapse_in_medians(medians, 160, MIN_CHANGE) == Collapse(19, 179, 0.6584, 0.1)


def _run_hook(hook, losses, start_iter=0):
    """Feed ``losses`` (one dict of scalars per iteration, from ``start_iter``) to ``hook``
    through an EventStorage, as the trainer does; returns the last iteration it saw."""
    trainer = hook.trainer = types.SimpleNamespace(iter=start_iter, start_iter=start_iter)
    with EventStorage(start_iter) as trainer.storage:
        hook.before_train()
        for trainer.iter, scalars in enumerate(losses, start_iter):
            trainer.storage.iter = trainer.iter
            trainer.storage.put_scalars(**scalars, total_loss=sum(scalars.values()))
            hook.after_step()
    return trainer.iter


def test_hook_watches_the_first_loss_logged_summed_over_its_stages():
    stages = [{"loss_cls_stage0": 1.0 / (i + 1), "loss_box_reg_stage0": 0.3 + 0.01 * (i % 2),
               "loss_box_reg_stage1": 0.3 - 0.01 * (i % 2)} for i in range(30)]  # sum: 0.6
    hook = CollapseCheckHook(["loss_box_reg"], window=5, min_change=0.001)
    with pytest.raises(TrainingCollapseError, match=r"collapsed: loss_box_reg_stage0 \+ "
                       r"loss_box_reg_stage1 has stayed within 0.1% of its start, 0.6, for 5 "
                       r"iterations \(iterations 19-24"):
        _run_hook(hook, stages)
    padet = [{"loss_det_cls": 1.0 / (i + 1), "loss_det_box_reg": 0.6} for i in range(30)]
    with pytest.raises(TrainingCollapseError, match="loss_det_box_reg has stayed"):
        _run_hook(CollapseCheckHook(["loss_box_reg", "loss_det_box_reg"], 5, 0.001), padet)


def test_hook_does_not_check_a_resumed_run():
    flat = [{"loss_box_reg": 0.6}] * 40
    with pytest.raises(TrainingCollapseError):
        _run_hook(CollapseCheckHook(["loss_box_reg"], 5, 0.02), flat)
    assert _run_hook(CollapseCheckHook(["loss_box_reg"], 5, 0.02), flat, start_iter=100) == 139
    with pytest.raises(ValueError, match="COLLAPSE_CHECK.LOSS"):  # the loss is still looked up
        _run_hook(CollapseCheckHook(["loss_iou"], 5, 0.02), flat, start_iter=100)


def test_hook_refuses_a_loss_the_model_does_not_log_at_the_first_iteration():
    hook = CollapseCheckHook(["loss_iou"], window=5, min_change=0.02)
    with pytest.raises(ValueError, match=r"COLLAPSE_CHECK.LOSS = \['loss_iou'\]: the model logs "
                       r"no such loss \(its losses: loss_box_reg, loss_cls, total_loss\)"):
        _run_hook(hook, [{"loss_cls": 1.0, "loss_box_reg": 0.5}])


def test_config_of_an_older_run_still_loads(tmp_path):
    """Runs of the earlier sliding-band check dumped COLLAPSE_CHECK.END_ITER in config.yaml."""
    old = tmp_path / "config.yaml"
    old.write_text(f"_BASE_: {FASTER_RCNN}\nCOLLAPSE_CHECK:\n  END_ITER: 1000\n  WINDOW: 200\n")
    cfg = load_config(str(old))
    assert cfg.COLLAPSE_CHECK.WINDOW == 200 and "END_ITER" not in cfg.COLLAPSE_CHECK
    typo = tmp_path / "typo.yaml"  # other unknown keys still raise
    typo.write_text(f"_BASE_: {FASTER_RCNN}\nCOLLAPSE_CHECK:\n  END_IT: 1000\n")
    with pytest.raises(KeyError, match="Non-existent config key: COLLAPSE_CHECK.END_IT"):
        load_config(str(typo))


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
    """A band so wide that any loss stays in it: the run stops WINDOW iterations after its
    first 20-iteration median (iteration 19)."""
    out = tmp_path / "run"
    with pytest.raises(TrainingCollapseError, match="training collapsed: loss_box_reg has "
                       r"stayed within 10000% of its start, .* for 2 iterations \(iterations "
                       "19-21"):
        run_train_net(FASTER_RCNN, out, *SHORT_RUN, "SOLVER.MAX_ITER", "25",
                      "SOLVER.CHECKPOINT_PERIOD", "10", "COLLAPSE_CHECK.WINDOW", "2",
                      "COLLAPSE_CHECK.MIN_CHANGE", "100.0")
    assert (out / "last_checkpoint").read_text().strip() == "model_0000019.pth"
    assert (out / "model_0000019.pth").is_file() and not (out / "model_final.pth").exists()
    # detectron2's writers still wrote the iterations that ran
    assert max(m["iteration"] for m in read_metrics(out) if "loss_box_reg" in m) == 21


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
