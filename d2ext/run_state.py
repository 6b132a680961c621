"""What a training run needs, beyond detectron2's checkpoint, to be resumed exactly and never
overwritten (docs/training.md, "Runs and --resume").

- :func:`check_fresh_output_dir`: a fresh run refuses an ``OUTPUT_DIR`` that holds a run.
- :func:`default_setup`: detectron2's ``default_setup`` with ``config.yaml`` written atomically
  (``d2ext.atomic``); detectron2 rewrites it in place.
- :class:`MetricsJSONWriter` and :class:`WriteMetricsBeforeCheckpoint`: ``metrics.json`` holds
  every record of an iteration before its checkpoint is saved; :func:`read_metrics` reads it
  back, refusing a malformed line.
- :class:`ResumableSampler` and :class:`SamplerCheckpoint`: the position of the training
  sampler's index stream, and :class:`RNGCheckpoint`: the python, numpy and torch RNG states,
  both as checkpointables (``checkpointer.checkpointables[name]``).
"""
import contextlib
import fnmatch
import itertools
import json
import os
import random
from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import Sampler

from detectron2.data import build_detection_train_loader
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventWriter, get_event_storage
from detectron2.utils.logger import setup_logger

from .atomic import write_text_atomically

__all__ = [
    "MetricsJSONWriter", "RNGCheckpoint", "ResumableSampler", "ResumableTrainLoader",
    "SamplerCheckpoint", "WriteMetricsBeforeCheckpoint", "build_resumable_train_loader",
    "check_fresh_output_dir", "default_setup", "existing_run_files", "preserved_rng_states",
    "read_metrics", "restart_data_loader_iter", "rng_states", "set_rng_states",
]

# files of a training run: checkpoints (model_0000099.pth, model_final.pth), detectron2's pointer
# to the latest one, the metrics and the config
RUN_FILE_PATTERNS = ("model_*.pth", "last_checkpoint", "metrics.json", "config.yaml")


def existing_run_files(output_dir):
    """The names of the run files (``RUN_FILE_PATTERNS``) in ``output_dir``, sorted."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(name for name in os.listdir(output_dir)
                  if any(fnmatch.fnmatch(name, p) for p in RUN_FILE_PATTERNS))


def check_fresh_output_dir(output_dir):
    """Raise ``FileExistsError`` if ``output_dir`` holds a run's checkpoints, metrics or config."""
    found = existing_run_files(output_dir)
    if found:
        raise FileExistsError(
            f"OUTPUT_DIR {output_dir} already holds a training run ({', '.join(found)}): pass "
            "--resume to continue it, or set another OUTPUT_DIR for a new run"
        )


def default_setup(cfg, args, write_config=True):
    """detectron2's ``default_setup`` (``detectron2.engine.default_setup``, 0.6 and main): log to
    the console and ``OUTPUT_DIR/log.txt``, log the environment, arguments and config, save the
    config to ``OUTPUT_DIR/config.yaml``, seed the RNGs (``SEED`` + rank, random if < 0) and set
    ``cudnn.benchmark`` for training. Unlike detectron2, ``config.yaml`` is written atomically
    (``d2ext.atomic``), and only if ``write_config``."""
    output_dir, rank = cfg.OUTPUT_DIR, comm.get_rank()
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    setup_logger(output_dir, distributed_rank=rank, name="fvcore")
    logger = setup_logger(output_dir, distributed_rank=rank)
    logger.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    logger.info("Environment info:\n%s", collect_env_info())
    logger.info("Command line arguments: %s", args)
    if getattr(args, "config_file", ""):
        with open(args.config_file) as f:
            logger.info("Contents of args.config_file=%s:\n%s", args.config_file, f.read())
    logger.info("Running with full config:\n%s", cfg.dump())
    if comm.is_main_process() and output_dir and write_config:
        path = os.path.join(output_dir, "config.yaml")
        write_text_atomically(path, cfg.dump())
        logger.info("Full config saved to %s", path)
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


class MetricsJSONWriter(EventWriter):
    """``metrics.json`` as detectron2's ``JSONWriter`` writes it (one JSON record per line: the
    latest value of each scalar, smoothed by its hint, with its ``iteration``; flushed and
    fsynced at every write), except that a scalar put at an iteration already written, such as
    an evaluation run after the checkpoint of that iteration, is written as another record of
    that iteration: ``JSONWriter`` drops every scalar at or before the last iteration written."""

    def __init__(self, json_file, window_size=20):
        self._file = open(json_file, "a")
        self._window_size = window_size
        self._written = {}  # scalar name -> last iteration written

    def write(self):
        records = defaultdict(dict)
        latest = get_event_storage().latest_with_smoothing_hint(self._window_size)
        for name, (value, iteration) in latest.items():
            if iteration > self._written.get(name, -1):
                records[iteration][name] = value
                self._written[name] = iteration
        for iteration in sorted(records):
            record = {**records[iteration], "iteration": iteration}
            self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self):
        self._file.close()


def read_metrics(path):
    """The records of a ``metrics.json``, in file order: one JSON object per line, each with its
    ``"iteration"``. A line that is not such an object (a truncated write, a foreign file) raises
    ValueError naming the file and the line number, rather than being skipped: a curve or a
    diagnostic silently missing records would misreport the run."""
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {number}: not JSON ({e.msg}): "
                                 f"{line.strip()[:80]!r}") from None
            if not isinstance(record, dict) or "iteration" not in record:
                raise ValueError(f"{path}, line {number}: not a metrics record (a JSON object "
                                 f"with an \"iteration\"): {line.strip()[:80]!r}")
            records.append(record)
    return records


class WriteMetricsBeforeCheckpoint(HookBase):
    """Writes ``metrics.json`` in the iterations where detectron2's ``PeriodicCheckpointer``
    saves (every ``period`` iterations and the last one), placed before it: detectron2 writes
    the metrics after the checkpoint, every 20 iterations, so a run killed right after a
    checkpoint lost the records of the iterations the resumed run does not repeat."""

    def __init__(self, writer, period):
        self.writer, self.period = writer, period

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if next_iter % self.period == 0 or next_iter >= self.trainer.max_iter:
            self.writer.write()


class ResumableSampler(Sampler):
    """One of detectron2's infinite training samplers (``TrainingSampler``,
    ``RepeatFactorTrainingSampler``, ``RandomSubsetTrainingSampler``) started ``start`` indices
    into its stream of indices, the one its ``_infinite_indices()`` draws from its ``_seed``.
    As in detectron2, each of N processes takes every N-th index of the stream."""

    def __init__(self, sampler):
        self.sampler, self.start = sampler, 0

    @property
    def seed(self):
        return self.sampler._seed

    @seed.setter
    def seed(self, value):
        self.sampler._seed = value

    def __iter__(self):
        yield from itertools.islice(self.sampler._infinite_indices(),
                                    self.start + comm.get_rank(), None, comm.get_world_size())


class ResumableTrainLoader:
    """A training data loader (iterating this iterates it) and the :class:`ResumableSampler`
    it draws from."""

    def __init__(self, loader, sampler):
        self.loader, self.sampler = loader, sampler

    def __iter__(self):
        return iter(self.loader)


def build_resumable_train_loader(cfg, mapper=None):
    """``build_detection_train_loader(cfg, mapper=mapper)`` over a :class:`ResumableSampler`
    wrapping the sampler ``DATALOADER.SAMPLER_TRAIN`` names."""
    kwargs = build_detection_train_loader.from_config(cfg, mapper=mapper)
    sampler = kwargs["sampler"] = ResumableSampler(kwargs["sampler"])
    return ResumableTrainLoader(build_detection_train_loader(**kwargs), sampler)


class SamplerCheckpoint:
    """Checkpointable position of a :class:`ResumableSampler`: its seed and the number of indices
    the run has consumed, ``start`` plus ``batch_size`` per iteration run since the trainer's
    ``start_iter``. Read it in ``after_step``, where detectron2's ``PeriodicCheckpointer`` saves.

    ``batch_size`` is ``SOLVER.IMS_PER_BATCH`` (over all processes). With
    ``DATALOADER.ASPECT_RATIO_GROUPING``, images drawn into the batch of the other aspect ratio
    and not yet used are drawn again by the resumed run (they are not checkpointed)."""

    def __init__(self, sampler, trainer, batch_size):
        self.sampler, self.trainer, self.batch_size = sampler, trainer, batch_size

    def state_dict(self):
        batches = self.trainer.iter + 1 - self.trainer.start_iter
        position = self.sampler.start + batches * self.batch_size
        return {"seed": self.sampler.seed, "position": position}

    def load_state_dict(self, state):
        self.sampler.seed, self.sampler.start = state["seed"], state["position"]


def restart_data_loader_iter(simple_trainer):
    """Give a ``SimpleTrainer`` a new iterator over its data loader (after its sampler moved):
    detectron2 0.6 creates it in ``SimpleTrainer.__init__``, main on first use."""
    iterator = iter(simple_trainer.data_loader)
    if "_data_loader_iter_obj" in vars(simple_trainer):
        simple_trainer._data_loader_iter_obj = iterator
    else:
        simple_trainer._data_loader_iter = iterator


def rng_states():
    """The python ``random``, numpy and torch RNG states, and the current CUDA device's once CUDA
    is initialized, as tensors and Python values (``torch.load(weights_only=True)`` reads them).
    """
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "random": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_states(state):
    """Restore the RNG states of :func:`rng_states`."""
    random.setstate(state["random"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


@contextlib.contextmanager
def preserved_rng_states():
    """Restore the RNG states on exit: what runs inside draws nothing from the caller's streams."""
    state = rng_states()
    try:
        yield
    finally:
        set_rng_states(state)


class RNGCheckpoint:
    """Checkpointable RNG states (:func:`rng_states`). detectron2 saves on the main process only,
    so with N > 1 processes each one restores the main process's states and then reseeds from
    them plus its rank: distinct, reproducible streams, not those of the interrupted run."""

    def state_dict(self):
        return rng_states()

    def load_state_dict(self, state):
        set_rng_states(state)
        if comm.get_world_size() > 1:
            seed_all_rng(int(np.random.randint(2 ** 31)) + comm.get_rank())
