"""Stop a training run whose loss has stopped moving (docs/training.md#collapse-check).

A run can collapse early: its box head stops learning, its box-regression loss stays at one
value from then on, and the run silently spends its whole schedule on a model that detects
nothing. One seed of IoU-uniform R-CNN on a simple synthetic dataset did so: ``loss_box_reg``
stayed at 0.60 from iteration 20 to the end (1,100 iterations) and the run ended at 0.6 AP,
while another seed trained normally.

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
    "add_collapse_check_config", "end_iter_of", "find_collapse", "find_collapse_in_medians",
    "watched_losses",
]

logger = logging.getLogger("detectron2.collapse_check")  # printed by default_setup

# the loss is smoothed by its median over this many iterations: the value detectron2 prints and
# writes to metrics.json (its writers' window)
MEDIAN_LENGTH = 20


def add_collapse_check_config(cfg):
    """Add the node ``COLLAPSE_CHECK`` (owned by this module, outside detectron2's nodes)."""
    cfg.COLLAPSE_CHECK = CN()
    # stop training with TrainingCollapseError when LOSS stops moving (CollapseCheckHook)
    cfg.COLLAPSE_CHECK.ENABLED = True
    # the watched loss: the first of these names the model logs, summed over its cascade stages
    # and PRM modules (<name>_stage0, <name>_m0, ...); PADet's head logs loss_det_box_reg
    cfg.COLLAPSE_CHECK.LOSS = ["loss_box_reg", "loss_det_box_reg"]
    # iterations without movement that mean a collapse
    cfg.COLLAPSE_CHECK.WINDOW = 200
    # movement: the loss's 20-iteration median leaves a band of +-MIN_CHANGE (relative)
    cfg.COLLAPSE_CHECK.MIN_CHANGE = 0.02
    # the check ends at this iteration, or at the first LR decay (SOLVER.STEPS) if that comes
    # first: later, a healthy loss may level off
    cfg.COLLAPSE_CHECK.END_ITER = 1000
    return cfg


def end_iter_of(cfg):
    """The first iteration the check of ``cfg`` skips: ``COLLAPSE_CHECK.END_ITER`` or the first
    of ``SOLVER.STEPS``, whichever is smaller."""
    return min([cfg.COLLAPSE_CHECK.END_ITER, *cfg.SOLVER.STEPS])


class TrainingCollapseError(RuntimeError):
    """Training stopped because the watched loss has not moved for ``COLLAPSE_CHECK.WINDOW``
    iterations (:class:`CollapseCheckHook`)."""


@dataclass(frozen=True)
class Collapse:
    """A flat stretch: the loss's running medians from ``first_iter`` to ``last_iter`` all lie
    within ``+-min_change`` (relative) of ``center``."""
    first_iter: int
    last_iter: int
    center: float
    min_change: float

    def describe(self, loss_name):
        """``<loss_name> has stayed within 2% of 0.601 for 200 iterations (...)``."""
        return (f"{loss_name} has stayed within {100 * self.min_change:g}% of "
                f"{self.center:.3g} for {self.last_iter - self.first_iter} iterations "
                f"(iterations {self.first_iter}-{self.last_iter}, {MEDIAN_LENGTH}-iteration "
                "medians)")


class CollapseDetector:
    """The collapse rule, fed one iteration at a time.

    The per-iteration loss varies from batch to batch even when the model predicts a constant,
    so the rule looks at its running median over the last ``MEDIAN_LENGTH`` iterations (fewer
    at the start), the value detectron2 prints. The run has collapsed at iteration t when the
    medians of every iteration from t - ``window`` to t lie in a band of +-``min_change``
    around its center: ``max - min <= min_change * |max + min|``. A model that learns moves
    its loss out of such a band; a model that has stopped learning leaves only batch noise,
    which the median shrinks (per-iteration noise of +-3% moves the median by about +-0.8%).

    The band spans the whole window rather than being measured from a reference value, so the
    answer depends on no starting point, and dropping medians can only narrow it: the rule fires
    on every 20th median (``metrics.json``) whenever it fires on all of them.
    """

    def __init__(self, window, min_change):
        self.window, self.min_change = window, min_change
        self._losses = deque(maxlen=MEDIAN_LENGTH)
        self._medians = deque()  # (iteration, median) of the last `window` iterations

    def add_loss(self, iteration, loss):
        """The :class:`Collapse` ending at ``iteration``, given the loss of that iteration
        (iterations in increasing order), or None."""
        self._losses.append(loss)
        return self.add_median(iteration, float(np.median(self._losses)))

    def add_median(self, iteration, median):
        """As :meth:`add_loss`, given the running median at ``iteration`` instead."""
        medians = self._medians
        medians.append((iteration, median))
        while len(medians) > 1 and medians[1][0] <= iteration - self.window:
            medians.popleft()
        if medians[0][0] > iteration - self.window:  # less than a window seen
            return None
        values = [value for _, value in medians]
        low, high = min(values), max(values)
        if high - low > self.min_change * abs(high + low):
            return None
        return Collapse(medians[0][0], iteration, (high + low) / 2, self.min_change)


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
    increasing iteration order, e.g. each ``metrics.json`` record's iteration and loss.

    metrics.json holds every 20th median. Each window of ``window`` iterations of the run
    contains the logged medians of a window of ``window - 20``, so when this finds no collapse
    with ``window - 20``, the check with ``window`` would not have fired during that run.
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
    """Raise :class:`TrainingCollapseError` when the watched loss has not moved
    (:class:`CollapseDetector`) before ``end_iter``.

    The check covers the start of training only (``COLLAPSE_CHECK.END_ITER``, at most until the
    first LR decay): there a model that learns changes its loss quickly, while after a decay,
    or late in a long schedule at a constant LR, a healthy loss may change by less than
    ``min_change`` in ``window`` iterations. The collapses it is meant for start within the
    first iterations.

    The error is raised in ``after_step`` out of ``trainer.train()``; detectron2's hooks run
    their ``after_train`` as after any error, so the checkpoints saved so far stay as they are.
    The losses are in the event storage of the main process only: add the hook there (with
    several processes, ``launch`` ends the others when the main one fails). The watched losses
    are looked up at the first iteration, which raises ValueError if there are none.
    """

    def __init__(self, loss, window, min_change, end_iter=None):
        """
        Args:
            loss: names of the watched loss, in order of preference (:func:`watched_losses`).
            window: iterations without movement that mean a collapse (>= 1).
            min_change: half-width of the band, relative to its center (>= 0).
            end_iter: the first iteration not checked (None: every iteration is).
        """
        if window < 1:
            raise ValueError(f"COLLAPSE_CHECK.WINDOW = {window}: need at least 1 iteration")
        if not min_change >= 0:
            raise ValueError(f"COLLAPSE_CHECK.MIN_CHANGE = {min_change}: need a change >= 0")
        self.loss, self.end_iter = tuple(loss), end_iter
        self.detector = CollapseDetector(window, min_change)
        self.names = None  # the watched losses, found at the first iteration

    @classmethod
    def from_config(cls, cfg):
        c = cfg.COLLAPSE_CHECK
        return cls(loss=c.LOSS, window=c.WINDOW, min_change=c.MIN_CHANGE,
                   end_iter=end_iter_of(cfg))

    def before_train(self):
        logger.info("Collapse check: stop if the %d-iteration median of the first logged of %s "
                    "stays within +-%g%% for %d iterations, until iteration %s "
                    "(docs/training.md#collapse-check)",
                    MEDIAN_LENGTH, ", ".join(self.loss), 100 * self.detector.min_change,
                    self.detector.window, "the end" if self.end_iter is None else self.end_iter)

    def after_step(self):
        storage, iteration = self.trainer.storage, self.trainer.iter
        if self.names is None:
            self.names = watched_losses(self.loss, storage.histories())
        if self.end_iter is not None and iteration >= self.end_iter:
            return
        loss = sum(storage.history(name).latest() for name in self.names)
        found = self.detector.add_loss(iteration, loss)
        if found:
            raise TrainingCollapseError(
                f"training collapsed: {found.describe(' + '.join(self.names))}; see "
                "docs/training.md#collapse-check (COLLAPSE_CHECK.ENABLED False trains on)")
