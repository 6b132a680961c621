#!/usr/bin/env python
"""GPU smoke run: a few training iterations of every paper config at its real input size, with
AMP off and on, and the IoU-uniform sample generator's exactness check on the device.

    python tools/gpu_smoke.py [--device cuda|cpu] [--iters 10] [--warmup 3] [--batch-size 2]
        [--configs GLOB ...] [--image-size H W] [--amp {on,off,both}] [KEY VALUE ...]

Configs: every leaf YAML (not ``Base-*``) of configs/iou_uniform, rga_prm, padet, iou_balanced
and datasets, or those matching ``--configs`` (globs relative to the repository root). Each is
built with ``train_net.load_config``; a ``MODEL.WEIGHTS`` that is a URL or a missing file is
replaced by random weights (column "weights": random), an existing file is loaded as training
would (the ImageNet backbone only). Inputs: fixed synthetic batches (uint8 random images on CPU,
as a data loader gives them, with ``--num-boxes`` random GT boxes of the config's classes) at the
config's largest training size, max(INPUT.MIN_SIZE_TRAIN) x INPUT.MAX_SIZE_TRAIN (PADet:
MODEL.PADET.INPUT_SIZE square); ``--image-size H W`` overrides it (CPU / CI mode; PADet: the
smallest valid square holding it). A step is detectron2's SimpleTrainer step with the hooks
train_net.py adds (``d2ext.benchmark.BenchmarkTrainer``); AMP on is AMPTrainer's step: float16
autocast with a GradScaler on CUDA, bfloat16 autocast without one on CPU. Every row builds a
fresh model (same seed), times ``--warmup`` + ``--iters`` steps alone and reports the median
s/iter, images/s, its peak memory and whether every loss stayed finite.

Then the IoU-uniform generator (configs/iou_uniform/faster_rcnn_R_50_FPN_1x.yaml's settings) runs
``iou_uniform.check_samples_exact`` on ``--gen-gts`` random GTs on the device: torch's random
numbers on CUDA, numpy's on CPU (the CPU branch, which the header names).
"""
import argparse
import glob
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train_net import load_config, method_hooks  # noqa: E402  (every method registered)
from d2ext.benchmark import (  # noqa: E402
    REPO, BenchmarkTrainer, PeakMemory, add_benchmark_arguments, benchmark_header,
    build_benchmark_model, num_classes_of, random_instances, random_training_batch,
    time_interleaved,
)
from d2ext.checkpoint import ProjectCheckpointer  # noqa: E402
from iou_uniform import IoUUniformSampleGenerator, check_samples_exact  # noqa: E402
from padet.config import PADET_MIN_INPUT_SIZE, PADET_SIZE_DIVISIBILITY  # noqa: E402

PAPER_FOLDERS = ("iou_uniform", "rga_prm", "padet", "iou_balanced", "datasets")
GENERATOR_CONFIG = "configs/iou_uniform/faster_rcnn_R_50_FPN_1x.yaml"
AMP_DTYPES = {"cuda": torch.float16, "cpu": torch.bfloat16}


def paper_configs(patterns=None):
    """Config paths relative to the repository: the leaf files of the paper folders, or the
    files matching ``patterns`` (globs relative to the repository); a pattern without a match
    raises ValueError."""
    if not patterns:
        return sorted(os.path.relpath(p, REPO) for folder in PAPER_FOLDERS
                      for p in glob.glob(os.path.join(REPO, "configs", folder, "*.yaml"))
                      if not os.path.basename(p).startswith("Base-"))
    found = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.join(REPO, pattern)))
        if not matches:
            raise ValueError(f"--configs {pattern} matches no file (KEY VALUE opts go before "
                             "--configs or after another option)")
        found += [os.path.relpath(p, REPO) for p in matches if os.path.relpath(p, REPO)
                  not in found]
    return found


def weights_file(cfg):
    """``MODEL.WEIGHTS`` if it names an existing local file, else None (random weights)."""
    path = cfg.MODEL.WEIGHTS
    return path if path and "://" not in path and os.path.isfile(path) else None


def input_size(cfg, override=None):
    """(H, W) of the synthetic training images: the config's largest training size, PADet's
    square, or ``override`` (for PADet: the smallest valid square holding it)."""
    if cfg.MODEL.META_ARCHITECTURE == "PADet":
        if override is None:
            return cfg.MODEL.PADET.INPUT_SIZE, cfg.MODEL.PADET.INPUT_SIZE
        d = PADET_SIZE_DIVISIBILITY
        side = max(PADET_MIN_INPUT_SIZE, math.ceil(max(override) / d) * d)
        return side, side
    if override is not None:
        return tuple(override)
    return max(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN


def synthetic_batches(cfg, num, batch_size, size, num_boxes, seed=0):
    """``num`` fixed training batches of random images at ``size`` with random GTs (CPU)."""
    g = torch.Generator().manual_seed(seed)
    return [random_training_batch([size] * batch_size, [num_boxes] * batch_size,
                                  num_classes_of(cfg), g, max_box_size=max(17, min(size) // 2))
            for _ in range(num)]


def smoke_row(config, args, amp_dtype):
    """Build ``config`` on the device, train ``--warmup`` + ``--iters`` steps; the row's dict."""
    cfg = load_config(os.path.join(REPO, config), [*args.opts, "MODEL.DEVICE", args.device])
    size = input_size(cfg, args.image_size)
    extra = []
    if cfg.MODEL.META_ARCHITECTURE == "PADet" and size[0] != cfg.MODEL.PADET.INPUT_SIZE:
        extra = ["MODEL.PADET.INPUT_SIZE", str(size[0])]
    weights = weights_file(cfg)
    batches = synthetic_batches(cfg, args.warmup + args.iters, args.batch_size, size,
                                args.num_boxes)
    row = {"config": config, "amp": "off" if amp_dtype is None else str(amp_dtype)[6:],
           "weights": weights or "random", "input": f"{args.batch_size}x{size[0]}x{size[1]}"}
    with PeakMemory(args.device) as memory:
        cfg, model = build_benchmark_model(
            load_config, config, [*args.opts, *extra], args.device)
        if weights:  # training's initialisation: ImageNet weights fill the backbone only
            ProjectCheckpointer(model, min_loaded_fraction=0.0).load(weights)
        trainer = BenchmarkTrainer(cfg, model, batches, hooks=method_hooks(cfg),
                                   amp_dtype=amp_dtype)
        try:
            times = time_interleaved({"step": trainer.step}, args.iters, args.warmup,
                                     args.device)["step"]
            row["finite"], row["loss"] = True, trainer.last_total_loss
        except FloatingPointError:  # detectron2's check of the total loss
            times, row["finite"], row["loss"] = None, False, float("nan")
    row["s_per_iter"] = statistics.median(times) if times else float("nan")
    row["images_per_s"] = args.batch_size / row["s_per_iter"]
    row["peak_mib"] = memory.mib
    del model, trainer
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return row


def generator_check(args):
    """``check_samples_exact`` of the IoU-uniform generator on the device, and its median
    time per call over ``--iters`` calls after ``--warmup``."""
    cfg = load_config(os.path.join(REPO, GENERATOR_CONFIG), [*args.opts, "MODEL.DEVICE", "cpu"])
    generator = IoUUniformSampleGenerator(cfg)
    size = tuple(args.image_size or (max(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN))
    gt = random_instances(*size, args.gen_gts, 1, torch.Generator().manual_seed(0),
                          max_size=max(17, min(size) // 2)).gt_boxes.tensor.to(args.device)
    torch.manual_seed(0)
    result = check_samples_exact(generator, gt, size)
    times = time_interleaved({"gen": lambda i: generator(gt, size)}, args.iters, args.warmup,
                             args.device)["gen"]
    return {**result, "size": size, "ms": statistics.median(times) * 1e3}


def _cell(value, fmt):
    return "—" if value is None or value != value else format(value, fmt)


def smoke_table(rows):
    """The markdown table of the training rows."""
    lines = ["| config | AMP | weights | input (B×H×W) | s/iter | images/s | peak memory (MiB) "
             "| losses finite | last total loss |",
             "|---|---|---|---|---:|---:|---:|:---:|---:|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['amp']} | {r['weights']} | {r['input']} | "
                     f"{_cell(r['s_per_iter'], '.4f')} | {_cell(r['images_per_s'], '.2f')} | "
                     f"{_cell(r['peak_mib'], '.0f')} | {'yes' if r['finite'] else 'NO'} | "
                     f"{_cell(r['loss'], '.4f')} |")
    return "\n".join(lines)


def generator_table(r, device):
    branch = "CUDA branch (torch.randint)" if device == "cuda" else \
        "CPU branch (numpy SFC64; no CUDA here)"
    yes = {True: "yes", False: "NO", None: "n/a"}
    return "\n".join([
        "| IoU-uniform sample generator | GTs | image | candidates | samples | max IoU error | "
        "IoU targets exact | argmax holds | filter = brute force | median ms | passed |",
        "|---|---:|---|---:|---:|---:|:---:|:---:|:---:|---:|:---:|",
        f"| {branch} | {r['num_gts']} | {r['size'][0]}x{r['size'][1]} | {r['num_candidates']} "
        f"| {r['num_samples']} | {r['iou_max_abs_error']:.3g} | {yes[r['ious_exact']]} | "
        f"{yes[r['argmax_holds']]} | {yes[r['filter_equals_brute_force']]} | {r['ms']:.2f} | "
        f"{yes[r['passed']]} |"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", metavar="GLOB",
                        help="config files (globs relative to the repository; default: every "
                        "paper config)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="input size of every config instead of its own (CPU / CI mode)")
    parser.add_argument("--amp", choices=["on", "off", "both"], default="both",
                        help="automatic mixed precision rows (CUDA float16, CPU bfloat16)")
    parser.add_argument("--num-boxes", type=int, default=10, help="random GT boxes per image")
    parser.add_argument("--gen-gts", type=int, default=100,
                        help="GTs of the sample generator's exactness check")
    args = add_benchmark_arguments(parser, iters=10, warmup=3, batch_size=2).parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    try:
        configs = paper_configs(args.configs)
    except ValueError as e:
        parser.error(str(e))
    amp = {"off": [None], "on": [AMP_DTYPES[args.device]],
           "both": [None, AMP_DTYPES[args.device]]}[args.amp]

    start = time.perf_counter()
    rows = [smoke_row(config, args, amp_dtype) for config in configs for amp_dtype in amp]
    gen = generator_check(args)
    print(benchmark_header(
        "GPU smoke run: training steps of the paper configs", args,
        f"{PeakMemory.describe(args.device)}; random GT boxes, {args.num_boxes} per image",
        interleaved=False))
    print()
    print(smoke_table(rows))
    print()
    print(generator_table(gen, args.device))
    print()
    print(f"{len(rows)} rows in {time.perf_counter() - start:.0f} s; "
          + ("all losses finite" if all(r["finite"] for r in rows) else "NON-FINITE LOSSES")
          + ("; generator exact" if gen["passed"] else "; GENERATOR CHECK FAILED"))
    return rows, gen


if __name__ == "__main__":
    smoke_rows, generator_result = main()
    sys.exit(0 if all(r["finite"] for r in smoke_rows) and generator_result["passed"] else 1)
