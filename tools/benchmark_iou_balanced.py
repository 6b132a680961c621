#!/usr/bin/env python
"""Train-step and inference time of the IoU-balanced detectors vs their baselines, side by side.

    python tools/benchmark_iou_balanced.py [--iters 20] [--batch-size 4] [--device cpu]

Each pair (baseline config, IoU-balanced config) is built with identical weights and timed on
the same shapes_train batches; the steps of all models are interleaved round-robin so that
background load affects them alike (``d2ext.benchmark``). A train step is detectron2's
SimpleTrainer step (forward + backward + optimizer step); inference is an eval forward. Prints a
table of median times and the balanced / baseline ratios (target <= 1.03 for training; inference
is the same code, so ~1.00).
"""
import argparse
import functools
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train_net import load_config  # noqa: E402  (every method registered)
from d2ext.benchmark import (  # noqa: E402
    BenchmarkTrainer, InferenceRunner, add_benchmark_arguments, benchmark_header,
    build_benchmark_model, shapes_batches, time_interleaved,
)

# a model of a config (relative to the repository), seeded, on --device (d2ext.benchmark)
build = functools.partial(build_benchmark_model, load_config)

PAIRS = [
    ("RetinaNet R18-FPN", "configs/shapes/retinanet_R_18_FPN.yaml",
     "configs/shapes/iou_balanced_retinanet_R_18_FPN.yaml"),
    ("Faster R-CNN R18-FPN", "configs/shapes/faster_rcnn_R_18_FPN.yaml",
     "configs/shapes/iou_balanced_faster_rcnn_R_18_FPN.yaml"),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args = add_benchmark_arguments(parser).parse_args(argv)

    steps, batches = {}, None
    for name, base_cfg, bal_cfg in PAIRS:
        cfg, baseline = build(base_cfg, args.opts, args.device)
        _, balanced = build(bal_cfg, args.opts, args.device, init_from=baseline)
        batches = batches or shapes_batches(cfg, args.warmup + args.iters, args.batch_size,
                                            args.device)
        for kind, model in (("baseline", baseline), ("balanced", balanced)):
            trainer = BenchmarkTrainer(cfg, model, batches)
            steps[(name, kind, "train")] = trainer.step
            steps[(name, kind, "infer")] = InferenceRunner(model, batches)
    times = time_interleaved(steps, args.iters, args.warmup, args.device)

    print(benchmark_header("IoU-balanced losses vs baselines", args,
                           f"batch {args.batch_size} shapes_train images"))
    print()
    header = f"{'detector':<22}{'train base':>12}{'train bal':>12}{'ratio':>8}" \
             f"{'infer base':>12}{'infer bal':>12}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    rows = []
    for name, _, _ in PAIRS:
        tb, tl = (statistics.median(times[(name, k, "train")]) for k in ("baseline", "balanced"))
        ib, il = (statistics.median(times[(name, k, "infer")]) for k in ("baseline", "balanced"))
        rows.append((name, tb, tl, ib, il))
        print(f"{name:<22}{tb * 1e3:>10.1f}ms{tl * 1e3:>10.1f}ms{tl / tb:>8.3f}"
              f"{ib * 1e3:>10.1f}ms{il * 1e3:>10.1f}ms{il / ib:>8.3f}")
    return rows


if __name__ == "__main__":
    main()
