"""Shared timing code of ``tools/benchmark_*.py``: side-by-side speed comparisons of detectors.

Models are built from config files with identical seeds (optionally copying a baseline's weights),
fed fixed batches, and timed *interleaved*: every iteration runs one step of every model (in a
rotating order) so that background load affects all of them alike. A train step is detectron2's
``SimpleTrainer.run_step`` (forward, backward, optimizer step, metrics) with the config's hooks'
``before_step``/``after_step`` around it; inference is an eval-mode forward under ``no_grad``.
The first ``warmup`` iterations are discarded; the table reports medians, the ratio to a baseline
row and whether the ratio meets its target.

``BenchmarkTrainer`` can also step under automatic mixed precision (``amp_dtype``: float16 with
a gradient scaler, as detectron2's ``AMPTrainer``, or bfloat16 without one), and
``random_training_batch`` / ``PeakMemory`` give synthetic inputs and a block's peak memory
(``tools/gpu_smoke.py``).
"""
import argparse
import itertools
import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.engine import SimpleTrainer
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from .solver import build_optimizer
from .tooling import build_model_with_weights

__all__ = [
    "REPO", "add_benchmark_arguments", "build_benchmark_model", "shapes_batches",
    "random_image_batches", "random_instances", "random_training_batch", "num_classes_of",
    "without_instances", "BenchmarkTrainer", "inference_step", "num_detections",
    "InferenceRunner", "count_macs", "PeakMemory", "time_interleaved", "Row",
    "benchmark_header", "markdown_table",
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_benchmark_arguments(parser: argparse.ArgumentParser, iters=20, warmup=3, batch_size=4):
    """The options every benchmark script shares; ``opts`` are config overrides for all models."""
    parser.add_argument("--iters", type=int, default=iters, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed steps per model")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=["cpu", "cuda"])
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="KEY VALUE config overrides of every model, as in train_net.py")
    return parser


def build_benchmark_model(load_config, config_file, opts=(), device="cpu", init_from=None,
                          seed=0, weights=None):
    """``(cfg, model)`` of a config (path relative to the repository root) on ``device``.

    ``load_config(path, opts)`` builds the config (``train_net.load_config``: every method's
    node). The model is initialised with ``torch.manual_seed(seed)``; with ``init_from`` every
    parameter and buffer it shares with that model is copied, so a method and its baseline start
    equal; with ``weights`` (a trained checkpoint) the model loads it instead.
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    path = config_file if os.path.isabs(config_file) else os.path.join(REPO, config_file)
    cfg = load_config(path, [*opts, "MODEL.DEVICE", device])
    return cfg, build_model_with_weights(cfg, weights=weights, seed=seed, init_from=init_from)


def _to(batch, device):
    return [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in d.items()} for d in batch]


def shapes_batches(cfg, num, batch_size, device):
    """``num`` training batches (DatasetMapper, is_train) of ``cfg.DATASETS.TRAIN[0]``, on device;
    the dataset's first ``num * batch_size`` images, cycled if it has fewer."""
    if num < 1 or batch_size < 1:
        raise ValueError(f"need num >= 1 and batch_size >= 1, got {num}, {batch_size}")
    mapper = DatasetMapper(cfg, is_train=True)
    records = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])
    if not records:
        raise ValueError(f"dataset {cfg.DATASETS.TRAIN[0]} is empty")
    data = [mapper(dict(r)) for r in itertools.islice(itertools.cycle(records), num * batch_size)]
    return [_to(data[i * batch_size:(i + 1) * batch_size], device) for i in range(num)]


def random_image_batches(num, batch_size, height, width, device, seed=0):
    """``num`` fixed batches of uniform random 0-255 images (C, H, W), inference inputs only."""
    g = torch.Generator().manual_seed(seed)
    return [
        [{"image": (torch.rand(3, height, width, generator=g) * 255).to(device),
          "height": height, "width": width} for _ in range(batch_size)]
        for _ in range(num)
    ]


def random_instances(height, width, num_boxes, num_classes, generator, max_size=80):
    """``num_boxes`` random GT boxes of 16 to ``max_size`` px a side (clipped to the image) in an
    (height, width) image, with random classes in [0, num_classes); CPU tensors."""
    inst = Instances((height, width))
    xy = torch.rand(num_boxes, 2, generator=generator) * torch.tensor([width - 20, height - 20])
    wh = 16 + torch.rand(num_boxes, 2, generator=generator) * (max_size - 16)
    x2y2 = torch.minimum(xy + wh, torch.tensor([width - 1.0, height - 1.0]))
    inst.gt_boxes = Boxes(torch.cat([xy, x2y2], dim=1))
    inst.gt_classes = torch.randint(num_classes, (num_boxes,), generator=generator)
    return inst


def random_training_batch(sizes, num_boxes, num_classes, generator, max_box_size=80):
    """detectron2 training inputs on CPU, as a data loader gives them: per (H, W) of ``sizes``
    a uint8 (3, H, W) random image and ``instances`` of the matching count of ``num_boxes``
    random GT boxes (:func:`random_instances`, at most ``max_box_size`` px a side)."""
    batch = []
    for (h, w), n in zip(sizes, num_boxes):
        image = (torch.rand(3, h, w, generator=generator) * 255).to(torch.uint8)
        batch.append({"image": image, "height": h, "width": w, "instances": random_instances(
            h, w, n, num_classes, generator, max_size=max_box_size)})
    return batch


def num_classes_of(cfg):
    """The number of classes a config's detector predicts: ``NUM_CLASSES`` of the config node
    named after its meta-architecture (e.g. ``MODEL.PADET`` for PADet), else of
    ``MODEL.RETINANET`` for a RetinaNet, else of ``MODEL.ROI_HEADS``."""
    meta = cfg.MODEL.META_ARCHITECTURE
    own = cfg.MODEL.get(meta.upper())
    if own is not None and "NUM_CLASSES" in own:
        return own.NUM_CLASSES
    if "RetinaNet" in meta:
        return cfg.MODEL.RETINANET.NUM_CLASSES
    return cfg.MODEL.ROI_HEADS.NUM_CLASSES


def without_instances(batch):
    """The inference inputs of a training batch: every key but ``instances``."""
    return [{k: v for k, v in d.items() if k != "instances"} for d in batch]


class BenchmarkTrainer(SimpleTrainer):
    """detectron2's SimpleTrainer over a fixed list of batches, stepped one iteration at a time.

    ``hooks`` (e.g. ``GradientAnnealingHook``) are registered and see ``before_train`` once and
    ``before_step``/``after_step`` around every step, as in ``DefaultTrainer.train``. The
    optimizer is ``d2ext.solver.build_optimizer(cfg)`` (gradient clipping included, ``full_model``
    too) at a tiny learning rate so that many steps on random weights stay finite; its cost does
    not depend on the rate.

    ``amp_dtype`` (torch.float16 or torch.bfloat16): the step of detectron2's ``AMPTrainer``,
    forward and loss under ``torch.autocast`` of the model's device type with that dtype, and
    for float16 a ``GradScaler`` around backward and the optimizer step (bfloat16 needs none;
    ``AMPTrainer`` itself needs CUDA, this also runs on CPU). A non-finite total loss raises
    ``FloatingPointError`` (detectron2's metrics check); the last one is ``last_total_loss``.
    """

    def __init__(self, cfg, model, batches, hooks=(), lr=1e-4, amp_dtype=None):
        cfg = cfg.clone()
        cfg.defrost()
        cfg.SOLVER.BASE_LR = lr
        super().__init__(model, itertools.cycle(batches), build_optimizer(cfg, model))
        self.amp_dtype = amp_dtype
        self.device_type = next(model.parameters()).device.type
        self.grad_scaler = None
        if amp_dtype == torch.float16:
            # torch.amp.GradScaler(device) from torch 2.3; torch.cuda.amp's before (deprecated)
            scaler = getattr(torch.amp, "GradScaler", None)
            self.grad_scaler = (scaler(self.device_type) if scaler is not None
                                else torch.cuda.amp.GradScaler())
        self.register_hooks(list(hooks))
        self.start_iter, self.max_iter = 0, cfg.SOLVER.MAX_ITER
        self.storage = EventStorage(0)
        self.iter = 0
        with self.storage:
            self.before_train()

    def step(self, _index=None):
        """One training iteration with its hooks."""
        self.model.train()
        with self.storage:
            self.before_step()
            self.run_step()
            self.after_step()
        self.iter += 1

    @property
    def last_total_loss(self):
        """The total loss of the latest step (detectron2's ``total_loss`` metric)."""
        return self.storage.history("total_loss").latest()

    def run_step(self):
        """SimpleTrainer's step, or with ``amp_dtype`` AMPTrainer's (see the class docstring)."""
        if self.amp_dtype is None:
            super().run_step()
            return
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast(device_type=self.device_type, dtype=self.amp_dtype):
            loss_dict = self.model(data)
            losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        if self.grad_scaler is None:
            losses.backward()
            self._write_metrics(loss_dict, data_time)
            self.optimizer.step()
        else:
            self.grad_scaler.scale(losses).backward()
            self._write_metrics(loss_dict, data_time)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()


@torch.no_grad()
def inference_step(model, inputs):
    """Eval-mode forward of ``inputs``; returns the outputs."""
    was_training = model.training
    model.eval()
    try:
        return model(inputs)
    finally:
        model.train(was_training)


def num_detections(outputs):
    """Mean number of detected instances per image of a detector's inference outputs."""
    return sum(len(o["instances"]) for o in outputs) / max(len(outputs), 1)


class InferenceRunner:
    """``runner(i)``: inference on ``batches[i]`` (``instances`` dropped); records the mean number
    of detections per image of every call in ``detections`` (the post-processing workload)."""

    def __init__(self, model, batches):
        self.model, self.batches, self.detections = model, batches, []

    def __call__(self, index):
        outputs = inference_step(self.model, without_instances(self.batches[index]))
        self.detections.append(num_detections(outputs))


@torch.no_grad()
def count_macs(model, inputs, extra=None):
    """Multiply-accumulates (MACs) of one inference forward on ``inputs``, counted with forward
    hooks: every ``nn.Conv2d`` (output elements × input channels per group × kernel area) and
    ``nn.Linear`` (output elements × input features), plus ``extra``: {module type:
    fn(module, output) -> MACs} for layers that call a functional op (e.g. deformable conv)."""
    counters = {**(extra or {}),
                nn.Conv2d: lambda m, out: out.numel() * (m.in_channels // m.groups)
                * m.kernel_size[0] * m.kernel_size[1],
                nn.Linear: lambda m, out: out.numel() * m.in_features}
    counts = []

    def hook(module, _, output):
        kind = next(k for k in counters if isinstance(module, k))
        counts.append(counters[kind](module, output))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, tuple(counters))]
    try:
        inference_step(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return sum(counts)


def _read_status_kib(field):
    """A ``kB`` field of /proc/self/status (e.g. VmRSS, VmHWM); None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Reset the process's peak RSS (VmHWM) to its current RSS; False where Linux refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """``with PeakMemory(device) as m: ...``; then ``m.mib`` is the block's peak memory in MiB:
    on CUDA ``torch.cuda.max_memory_allocated`` (peak statistics reset on entry, so it includes
    the tensors alive on entry); on CPU the growth of the process's peak resident set over the
    resident set on entry (VmHWM - VmRSS of /proc/self/status, VmHWM reset on entry through
    /proc/self/clear_refs). None where that is unavailable (no /proc, or a refused reset).
    ``PeakMemory.describe(device)`` says which of them is measured."""

    def __init__(self, device):
        self.cuda = str(device).startswith("cuda")
        self.mib = None
        self._start_kib = None

    @staticmethod
    def describe(device):
        if str(device).startswith("cuda"):
            return "peak memory: torch.cuda.max_memory_allocated, reset per row"
        return ("peak memory: growth of the process's peak RSS over the row (VmHWM - VmRSS at "
                "the start, /proc/self/status; VmHWM reset per row via /proc/self/clear_refs)")

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        elif _reset_peak_rss():
            self._start_kib = _read_status_kib("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated() / 2 ** 20
        elif self._start_kib is not None:
            peak = _read_status_kib("VmHWM")
            self.mib = None if peak is None else (peak - self._start_kib) / 1024
        return False


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(steps: Dict[str, Callable[[int], object]], iters, warmup, device):
    """Seconds per call of every ``steps[name](i)``, i = 0..warmup+iters-1, interleaved.

    Iteration i runs every step once, starting at a different one each iteration (rotation), so
    no model is always first. The first ``warmup`` iterations are not recorded.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got {iters}, {warmup}")
    names = list(steps)
    times = {name: [] for name in names}
    for i in range(warmup + iters):
        for name in names[i % len(names):] + names[: i % len(names)]:
            _sync(device)
            start = time.perf_counter()
            steps[name](i)
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


@dataclass
class Row:
    """One table row: ``key`` indexes the timings; ``baseline`` the key of the row it is compared
    with; ``target`` the maximal ratio time / baseline time, or without a baseline the maximal
    time in ms (None: no target); ``per`` divides the median (e.g. the batch size, per image)."""

    name: str
    key: str
    baseline: Optional[str] = None
    target: Optional[float] = None
    per: int = 1


def benchmark_header(title, args, extra="", interleaved=True):
    """Markdown header naming the device, torch's version and thread count and the timing
    settings (``interleaved``: the models' steps alternate round-robin)."""
    device = args.device
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name()})"
    lines = [f"## {title}", "",
             f"device {device}, torch {torch.__version__}, torch threads "
             f"{torch.get_num_threads()}, {args.iters} timed iterations after {args.warmup} "
             "warm-up (median)" + (", interleaved round-robin" if interleaved else "")
             + (f"; {extra}" if extra else "")]
    return "\n".join(lines)


def print_report(header, table, runners, footer=""):
    """Print a benchmark's header, its table, an optional footer line and the detections per
    image of each ``InferenceRunner`` (the post-processing workload each model ran)."""
    print(header)
    print()
    print(table)
    print()
    if footer:
        print(footer)
    print("detections per image (post-processing workload): " + ", ".join(
        f"{key} {sum(r.detections) / len(r.detections):.1f}" for key, r in runners.items()))


def markdown_table(rows: Sequence[Row], times: Dict[str, List[float]]):
    """``(text, results)``: a markdown table (name, median ms, ratio vs baseline, target, met?)
    and per row a dict with those values (``ratio``/``met`` None without baseline/target)."""
    medians = {k: statistics.median(v) for k, v in times.items()}
    by_key = {r.key: r for r in rows}
    lines = ["| name | median (ms) | ratio vs baseline | target | met? |",
             "|---|---:|---:|---:|:---:|"]
    results = []
    for r in rows:
        t = medians[r.key] / r.per
        ratio = met = None
        target = "—"
        if r.baseline is not None:
            ratio = t / (medians[r.baseline] / by_key[r.baseline].per)
        if r.target is not None:
            met = (ratio if ratio is not None else t * 1e3) <= r.target
            target = f"≤ {r.target:.2f}" + ("×" if ratio is not None else " ms")
        base = f" (vs {by_key[r.baseline].name})" if r.baseline is not None else ""
        lines.append(
            f"| {r.name} | {t * 1e3:.2f} | "
            f"{'—' if ratio is None else f'{ratio:.3f}{base}'} | {target} | "
            f"{'—' if met is None else ('yes' if met else 'no')} |")
        results.append({"name": r.name, "seconds": t, "ratio": ratio, "target": r.target,
                        "met": met})
    return "\n".join(lines), results
