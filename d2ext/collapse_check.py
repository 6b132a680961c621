"""Stop a training run whose box loss never moves from where it started
(docs/training.md#collapse-check).

A run can collapse at its start: its box head never learns, its box-regression loss stays at its
first value, and the run silently spends its whole schedule on a model that detects nothing.
Seeds of IoU-uniform R-CNN on a simple synthetic dataset did so: ``loss_box_reg`` stayed
between 0.57 and 0.61 from iteration 19 to 299 (and, in one reported run, to the end), while
other seeds of the same config fell below 0.45 by then.

- :class:`CollapseDetector` is the rule; :func:`find_collapse` applies it to a sequence of
  per-iteration loss values and :func:`find_collapse_in_medians` to logged 20-iteration medians
  (``metrics.json``, ``log.txt``), so that logged runs can be checked offline.
- :class:`CollapseCheckHook` applies it during training, to the loss ``COLLAPSE_CHECK.LOSS``
  names, and raises :class:`TrainingCollapseError`.
- :func:`add_collapse_check_config` adds the config node ``COLLAPSE_CHECK``.
"""
import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from detectron2.config import CfgNode as CN
from detectron2.engine import HookBase

__all__ = [
    "MEDIAN_LENGTH", "Collapse", "CollapseDetector", "CollapseCheckHook", "TrainingCollapseError",
    "add_collapse_check_config", "find_collapse", "find_collapse_in_medians", "watched_losses",
]

logger = logging.getLogger("detectron2.collapse_check")  # printed by default_setup

# the loss is smoothed by its median over this many iterations: the value detectron2 prints and
# writes to metrics.json (its writers' window)
MEDIAN_LENGTH = 20


def add_collapse_check_config(cfg):
    """Add the node ``COLLAPSE_CHECK`` (owned by this module, outside detectron2's nodes)."""
    cfg.COLLAPSE_CHECK = CN()
    # stop training with TrainingCollapseError when LOSS never leaves its start (CollapseCheckHook)
    cfg.COLLAPSE_CHECK.ENABLED = True
    # the watched loss: the first of these names the model logs, summed over its cascade stages
    # and PRM modules (<name>_stage0, <name>_m0, ...); PADet's head logs loss_det_box_reg
    cfg.COLLAPSE_CHECK.LOSS = ["loss_box_reg", "loss_det_box_reg"]
    # iterations after the first 20-iteration median (iteration 19) without movement that mean
    # a collapse: the run stops at iteration 19 + WINDOW
    cfg.COLLAPSE_CHECK.WINDOW = 250
    # movement: the loss's 20-iteration median leaves a band of +-MIN_CHANGE (relative) around
    # its first value
    cfg.COLLAPSE_CHECK.MIN_CHANGE = 0.10
    # the end of the earlier sliding-band check: the config.yaml of older runs still loads, the
    # key ignored with a warning (yacs' deprecated keys)
    cfg.register_deprecated_key("COLLAPSE_CHECK.END_ITER")
    return cfg


class TrainingCollapseError(RuntimeError):
    """Training stopped because the watched loss has not left its start for
    ``COLLAPSE_CHECK.WINDOW`` iterations (:class:`CollapseCheckHook`)."""


@dataclass(frozen=True)
class Collapse:
    """The loss's running medians from ``first_iter`` to ``last_iter`` all lie within
    ``+-min_change`` (relative) of ``start``, the median at ``first_iter``."""
    first_iter: int
    last_iter: int
    start: float
    min_change: float

    def describe(self, loss_name):
        """``<loss_name> has stayed within 10% of its start, 0.606, for 250 iterations (...)``."""
        return (f"{loss_name} has stayed within {100 * self.min_change:g}% of its start, "
                f"{self.start:.3g}, for {self.last_iter - self.first_iter} iterations "
                f"(iterations {self.first_iter}-{self.last_iter}, {MEDIAN_LENGTH}-iteration "
                "medians)")


class CollapseDetector:
    """The collapse rule, fed one iteration at a time.

    The per-iteration loss varies from batch to batch, so the rule looks at its running median
    over the last ``MEDIAN_LENGTH`` iterations, the value detectron2 prints; the first one is
    that of the first ``MEDIAN_LENGTH`` iterations, the start. The run has collapsed at
    iteration t when every median from the start to t, ``window`` iterations later, lies in a
    band of +-``min_change`` around the start. A box head that learns moves its loss out of the
    band early: down where the training samples' distribution is fixed (IoU-uniform R-CNN's
    generated samples), up where the RPN's proposals bring more foreground (Faster R-CNN's box
    loss rises from 0.1 to 0.6 in its first 100 iterations). Once the loss has left the band the
    run is never stopped.

    The band is anchored at the start, not at any later point, because a healthy loss can level
    off later: Faster R-CNN's stays within +-5% of 0.7 for hundreds of iterations on shapes.
    Dropping medians can only keep the loss in the band longer: the rule fires on every 20th
    median (``metrics.json``) whenever it fires on all of them.
    """

    def __init__(self, window, min_change):
        self.window, self.min_change = window, min_change
        self._losses = deque(maxlen=MEDIAN_LENGTH)
        self._start = None  # (iteration, median) of the first median
        self._moved = False

    def add_loss(self, iteration, loss):
        """The :class:`Collapse` ending at ``iteration``, given the loss of that iteration
        (consecutive iterations in increasing order), or None."""
        if self._moved:
            return None
        self._losses.append(loss)
        if len(self._losses) < MEDIAN_LENGTH:
            return None
        return self.add_median(iteration, float(np.median(self._losses)))

    def add_median(self, iteration, median):
        """As :meth:`add_loss`, given the running median at ``iteration`` instead."""
        if self._start is None:
            self._start = (iteration, median)
        first_iter, start = self._start
        if self._moved or abs(median - start) > self.min_change * abs(start):
            self._moved = True
            return None
        if iteration - first_iter < self.window:
            return None
        return Collapse(first_iter, iteration, start, self.min_change)


def find_collapse(losses, window, min_change, start_iter=0):
    """The first :class:`Collapse` in ``losses``, the per-iteration values of iterations
    ``start_iter``, ``start_iter + 1``, ... (None if the rule never fires)."""
    detector = CollapseDetector(window, min_change)
    for iteration, loss in enumerate(losses, start_iter):
        found = detector.add_loss(iteration, loss)
        if found:
            return found
    return None


def find_collapse_in_medians(medians, window, min_change):
    """The first :class:`Collapse` in logged running medians: ``(iteration, median)`` pairs in
    increasing iteration order from the first (iteration 19), e.g. each ``metrics.json``
    record's iteration and loss.

    metrics.json holds every 20th median, a subset of those the check sees during training: when
    this finds no collapse in a run logged past iteration 19 + ``window``, the check would not
    have stopped that run.
    """
    detector = CollapseDetector(window, min_change)
    for iteration, median in medians:
        found = detector.add_median(iteration, median)
        if found:
            return found
    return None


def watched_losses(names, logged):
    """The losses of ``logged`` (the scalar names training logs) that the check watches: those
    of the first of ``names`` that matches any, a name matching itself and its suffixed
    variants (``<name>_stage0``, ``<name>_m0``: cascade stages, PRM modules). None matching
    raises ValueError naming the key and the losses logged."""
    for name in names:
        matched = sorted(n for n in logged if n == name or n.startswith(name + "_"))
        if matched:
            return matched
    losses = ", ".join(sorted(n for n in logged if "loss" in n))
    raise ValueError(
        f"COLLAPSE_CHECK.LOSS = {list(names)}: the model logs no such loss (its losses: "
        f"{losses}); set COLLAPSE_CHECK.LOSS to one of them, or COLLAPSE_CHECK.ENABLED False")


class CollapseCheckHook(HookBase):
    """Raise :class:`TrainingCollapseError` when the watched loss has not left its start
    (:class:`CollapseDetector`).

    The rule needs the run's start: a run resumed from a checkpoint past its first iteration is
    not checked (its start was checked when it ran). The error is raised in ``after_step`` out
    of ``trainer.train()``; detectron2's hooks run their ``after_train`` as after any error, so
    the checkpoints saved so far stay as they are. The losses are in the event storage of the
    main process only: add the hook there (with several processes, ``launch`` ends the others
    when the main one fails). The watched losses are looked up at the first iteration, which
    raises ValueError if there are none.
    """

    def __init__(self, loss, window, min_change):
        """
        Args:
            loss: names of the watched loss, in order of preference (:func:`watched_losses`).
            window: iterations without movement, after the start, that mean a collapse (>= 1).
            min_change: half-width of the band, relative to the start (>= 0).
        """
        if window < 1:
            raise ValueError(f"COLLAPSE_CHECK.WINDOW = {window}: need at least 1 iteration")
        if not min_change >= 0:
            raise ValueError(f"COLLAPSE_CHECK.MIN_CHANGE = {min_change}: need a change >= 0")
        self.loss = tuple(loss)
        self.detector = CollapseDetector(window, min_change)
        self.names = None  # the watched losses, found at the first iteration
        self.checking = True

    @classmethod
    def from_config(cls, cfg):
        c = cfg.COLLAPSE_CHECK
        return cls(loss=c.LOSS, window=c.WINDOW, min_change=c.MIN_CHANGE)

    def before_train(self):
        d = self.detector
        self.checking = self.trainer.start_iter == 0
        if not self.checking:
            logger.info("Collapse check: off, the run resumes at iteration %d and the check "
                        "needs its start (docs/training.md#collapse-check)",
                        self.trainer.start_iter)
            return
        logger.info("Collapse check: stop if the %d-iteration median of the first logged of %s "
                    "stays within +-%g%% of its start (iteration %d) until iteration %d "
                    "(docs/training.md#collapse-check)", MEDIAN_LENGTH, ", ".join(self.loss),
                    100 * d.min_change, MEDIAN_LENGTH - 1, MEDIAN_LENGTH - 1 + d.window)

    def after_step(self):
        storage = self.trainer.storage
        if self.names is None:
            self.names = watched_losses(self.loss, storage.histories())
        if not self.checking:
            return
        loss = sum(storage.history(name).latest() for name in self.names)
        found = self.detector.add_loss(self.trainer.iter, loss)
        if found:
            raise TrainingCollapseError(
                f"training collapsed: {found.describe(' + '.join(self.names))}; see "
                "docs/training.md#collapse-check (COLLAPSE_CHECK.ENABLED False trains on)")
