#!/usr/bin/env python
"""Speed of R-CNN Gradient Annealing (RGA) and Parallel R-CNN Modules (PRM) vs Faster R-CNN.

    python tools/benchmark_rga_prm.py [--iters 20] [--warmup 3] [--batch-size 4] [--device cpu]

Rows (``d2ext.benchmark``: identical initial weights, the same shapes_train batches, all steps
interleaved round-robin, medians):
- train step (SimpleTrainer: forward, backward, optimizer step, with the hooks train_net.py
  adds: ``GradientAnnealingHook`` when ``MODEL.RGA.ENABLED``) of the baseline, RGA (target
  <= 1.01x), PRM + RGA and PRM without RGA (``MODEL.RGA.ENABLED False``; no targets);
- inference of PRM (Sec. 3.2 average ensemble) vs the baseline (target <= 1.10x). Both score
  (RoI, class) pairs by softmax probability above ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``; with
  random weights the probabilities are ~1/6, so both run NMS on all candidates (same workload,
  printed as detections per image).
"""
import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train_net import load_config, method_hooks  # noqa: E402  (every method registered)
from d2ext.benchmark import (  # noqa: E402
    BenchmarkTrainer, InferenceRunner, Row, add_benchmark_arguments, benchmark_header,
    build_benchmark_model, markdown_table, print_report, shapes_batches, time_interleaved,
)

# a model of a config (relative to the repository), seeded, on --device (d2ext.benchmark)
build = functools.partial(build_benchmark_model, load_config)

BASELINE = "configs/shapes/faster_rcnn_R_18_FPN.yaml"
RGA = "configs/shapes/rga_R_18_FPN.yaml"
PRM = "configs/shapes/rga_prm_R_18_FPN.yaml"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args = add_benchmark_arguments(parser).parse_args(argv)

    cfg, baseline = build(BASELINE, args.opts, args.device)
    batches = shapes_batches(cfg, args.warmup + args.iters, args.batch_size, args.device)
    train_models = {
        "train_base": (cfg, baseline),
        "train_rga": build(RGA, args.opts, args.device, baseline),
        "train_prm_rga": build(PRM, args.opts, args.device, baseline),
        "train_prm": build(PRM, [*args.opts, "MODEL.RGA.ENABLED", "False"], args.device,
                           baseline),
    }
    steps = {key: BenchmarkTrainer(c, m, batches, hooks=method_hooks(c)).step
             for key, (c, m) in train_models.items()}
    # untrained copies for inference, so that every iteration infers with the same weights
    runners = {
        "infer_base": InferenceRunner(
            build(BASELINE, args.opts, args.device)[1], batches),
        "infer_prm": InferenceRunner(
            build(PRM, args.opts, args.device, baseline)[1], batches),
    }
    steps.update(runners)
    times = time_interleaved(steps, args.iters, args.warmup, args.device)

    rows = [
        Row("train step: Faster R-CNN (baseline)", "train_base"),
        Row("train step: RGA", "train_rga", "train_base", 1.01),
        Row("train step: PRM + RGA", "train_prm_rga", "train_base"),
        Row("train step: PRM, no RGA", "train_prm", "train_base"),
        Row("inference: Faster R-CNN (baseline)", "infer_base"),
        Row("inference: PRM (ensemble)", "infer_prm", "infer_base", 1.10),
    ]
    table, results = markdown_table(rows, times)
    header = benchmark_header("RGA and PRM vs Faster R-CNN (R-18-FPN, shapes)", args,
                              f"batch {args.batch_size} shapes_train images")
    print_report(header, table, runners)
    return results


if __name__ == "__main__":
    main()
