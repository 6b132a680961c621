#!/usr/bin/env python
"""Speed of IoU-uniform R-CNN vs Faster R-CNN (R-18-FPN shapes configs), side by side.

    python tools/benchmark_iou_uniform.py [--iters 20] [--warmup 3] [--batch-size 4] [--device cpu]

Rows (``d2ext.benchmark``: identical initial weights, the same shapes_train batches, all steps
interleaved round-robin, medians):
- sample generation: ``IoUUniformSampleGenerator`` (Eq. 1) for 100 random GTs in an 800x1333
  image, with the IoU-uniform config's generator settings (target <= 5 ms on CPU);
- train step (SimpleTrainer: forward, backward, optimizer step) of the IoU-uniform config vs the
  baseline (target <= 1.3x);
- inference with EFO (§3.2) vs the baseline (target <= 1.15x), and without EFO
  (``MODEL.IOU_UNIFORM.EFO False``, no target; the cost of EFO is the difference).
Post-processing: both detectors keep (RoI, class) pairs whose class probability exceeds
``MODEL.ROI_HEADS.SCORE_THRESH_TEST``; with random weights the probabilities are ~1/6, so both
run NMS on all candidates: the same, worst-case workload (printed as detections per image).
EFO pools again only the RoIs above that threshold: with random weights that is every RoI (the
worst case). ``--baseline-weights A.pth --iou-uniform-weights B.pth`` (trained shapes models)
time the inference rows with trained weights instead, where fewer RoIs pass the threshold.
"""
import argparse
import functools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train_net import load_config  # noqa: E402  (every method registered)
from d2ext.benchmark import (  # noqa: E402
    BenchmarkTrainer, InferenceRunner, Row, add_benchmark_arguments, benchmark_header,
    build_benchmark_model, markdown_table, print_report, shapes_batches, time_interleaved,
)
from iou_uniform.sample_generator import IoUUniformSampleGenerator  # noqa: E402

# a model of a config (relative to the repository), seeded, on --device (d2ext.benchmark)
build = functools.partial(build_benchmark_model, load_config)

BASELINE = "configs/shapes/faster_rcnn_R_18_FPN.yaml"
IOU_UNIFORM = "configs/shapes/iou_uniform_R_18_FPN.yaml"
NUM_GTS, IMAGE_SIZE = 100, (800, 1333)


def random_gt_boxes(num, image_size, device, seed=0):
    """``num`` random XYXY boxes of 8-400 px inside an (H, W) image."""
    g = torch.Generator().manual_seed(seed)
    h, w = image_size
    wh = 8 + torch.rand(num, 2, generator=g) * 392
    x0y0 = torch.rand(num, 2, generator=g) * (torch.tensor([w, h]) - wh)
    return torch.cat([x0y0, x0y0 + wh], dim=1).to(device)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-weights", help="trained checkpoint of the baseline config "
                        "for the inference rows (default: random weights, the worst case)")
    parser.add_argument("--iou-uniform-weights", help="trained checkpoint of the IoU-uniform "
                        "config for the inference rows")
    args = add_benchmark_arguments(parser).parse_args(argv)
    if bool(args.baseline_weights) != bool(args.iou_uniform_weights):
        parser.error("give both --baseline-weights and --iou-uniform-weights, or neither")

    cfg, baseline = build(BASELINE, args.opts, args.device)
    iu_cfg, iou_uni = build(IOU_UNIFORM, args.opts, args.device, baseline)
    batches = shapes_batches(cfg, args.warmup + args.iters, args.batch_size, args.device)
    # separate copies for inference, so that every iteration infers with the same weights
    no_efo = [*args.opts, "MODEL.IOU_UNIFORM.EFO", "False"]
    infer = {
        "infer_base": build(BASELINE, args.opts, args.device,
                            weights=args.baseline_weights)[1],
        "infer_efo": build(IOU_UNIFORM, args.opts, args.device, baseline,
                           weights=args.iou_uniform_weights)[1],
        "infer_no_efo": build(IOU_UNIFORM, no_efo, args.device, baseline,
                              weights=args.iou_uniform_weights)[1],
    }
    generator = IoUUniformSampleGenerator(iu_cfg)
    gt_boxes = random_gt_boxes(NUM_GTS, IMAGE_SIZE, args.device)

    steps = {
        "sample_gen": lambda i: generator(gt_boxes, IMAGE_SIZE),
        "train_base": BenchmarkTrainer(cfg, baseline, batches).step,
        "train_iou": BenchmarkTrainer(iu_cfg, iou_uni, batches).step,
    }
    runners = {key: InferenceRunner(model, batches) for key, model in infer.items()}
    steps.update(runners)
    times = time_interleaved(steps, args.iters, args.warmup, args.device)

    rows = [
        Row(f"sample generation ({NUM_GTS} GTs, {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]})", "sample_gen",
            target=5.0),
        Row("train step: Faster R-CNN (baseline)", "train_base"),
        Row("train step: IoU-uniform", "train_iou", "train_base", 1.3),
        Row("inference: Faster R-CNN (baseline)", "infer_base"),
        Row("inference: IoU-uniform, EFO", "infer_efo", "infer_base", 1.15),
        Row("inference: IoU-uniform, no EFO", "infer_no_efo", "infer_base"),
    ]
    table, results = markdown_table(rows, times)
    header = benchmark_header("IoU-uniform R-CNN vs Faster R-CNN (R-18-FPN, shapes)", args,
                              f"batch {args.batch_size} shapes_train images; sample-generation "
                              "target for CPU; inference with "
                              + ("trained weights" if args.baseline_weights else "random weights"))
    print_report(header, table, runners)
    return results


if __name__ == "__main__":
    main()
