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

    python tools/benchmark_iou_uniform.py --crowded-gts 1000 [--baseline] [--iters 5] [KEY VALUE]

``--crowded-gts N`` times train steps of one config alone (the IoU-uniform one, or with
``--baseline`` Faster R-CNN) on one 128x224 image (the shapes configs' size) holding N random
GT boxes, and prints the median step time and the process's peak RSS: run one process per
config, e.g. with ``MODEL.IOU_UNIFORM.MAX_GTS_PER_IMAGE 0`` (no cap) and without
(docs/iou_uniform.md).
"""
import argparse
import functools
import os
import resource
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train_net import load_config  # noqa: E402  (every method registered)
from d2ext.benchmark import (  # noqa: E402
    BenchmarkTrainer, InferenceRunner, Row, add_benchmark_arguments, benchmark_header,
    build_benchmark_model, markdown_table, print_report, shapes_batches, time_interleaved,
)
from detectron2.structures import Boxes, Instances  # noqa: E402
from iou_uniform.sample_generator import IoUUniformSampleGenerator  # noqa: E402

# a model of a config (relative to the repository), seeded, on --device (d2ext.benchmark)
build = functools.partial(build_benchmark_model, load_config)

BASELINE = "configs/shapes/faster_rcnn_R_18_FPN.yaml"
IOU_UNIFORM = "configs/shapes/iou_uniform_R_18_FPN.yaml"
NUM_GTS, IMAGE_SIZE = 100, (800, 1333)
CROWDED_IMAGE_SIZE = (128, 224)


def random_gt_boxes(num, image_size, device, seed=0, max_side=400):
    """``num`` random XYXY boxes of 8-``max_side`` px inside an (H, W) image."""
    g = torch.Generator().manual_seed(seed)
    h, w = image_size
    wh = 8 + torch.rand(num, 2, generator=g) * (max_side - 8)
    x0y0 = torch.rand(num, 2, generator=g) * (torch.tensor([w, h]) - wh)
    return torch.cat([x0y0, x0y0 + wh], dim=1).to(device)


def crowded_train_step(args):
    """Median train-step seconds and peak RSS (MiB) of one config on one image with
    ``args.crowded_gts`` random GTs (``--crowded-gts``)."""
    config = BASELINE if args.baseline else IOU_UNIFORM
    cfg, model = build(config, args.opts, args.device)
    h, w = CROWDED_IMAGE_SIZE
    gt = random_gt_boxes(args.crowded_gts, CROWDED_IMAGE_SIZE, args.device, max_side=h // 2)
    g = torch.Generator().manual_seed(0)
    classes = torch.randint(0, cfg.MODEL.ROI_HEADS.NUM_CLASSES, (len(gt),), generator=g)
    batch = [{"image": (torch.rand(3, h, w, generator=g) * 255).to(args.device),
              "height": h, "width": w,
              "instances": Instances((h, w), gt_boxes=Boxes(gt), gt_classes=classes.to(gt.device))}]
    times = time_interleaved({"step": BenchmarkTrainer(cfg, model, [batch]).step}, args.iters,
                             args.warmup, args.device)["step"]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(f"{config} {' '.join(args.opts)}: {args.crowded_gts} GTs on one {h}x{w} image, "
          f"train step median {statistics.median(times):.2f} s over {args.iters}, "
          f"peak RSS {peak_mib:.0f} MiB")
    return statistics.median(times), peak_mib


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-weights", help="trained checkpoint of the baseline config "
                        "for the inference rows (default: random weights, the worst case)")
    parser.add_argument("--iou-uniform-weights", help="trained checkpoint of the IoU-uniform "
                        "config for the inference rows")
    parser.add_argument("--crowded-gts", type=int, default=0, help="time one config's train step "
                        "on one image with this many GTs, and its peak RSS (see above)")
    parser.add_argument("--baseline", action="store_true",
                        help="with --crowded-gts: the Faster R-CNN baseline config")
    args = add_benchmark_arguments(parser).parse_args(argv)
    if args.crowded_gts:
        return crowded_train_step(args)
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
