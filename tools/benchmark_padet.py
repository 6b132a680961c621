#!/usr/bin/env python
"""Inference time per image of PADet VGG-16-384 vs RetinaNet and Faster R-CNN R50-FPN at 800x1333.

    python tools/benchmark_padet.py [--iters 10] [--warmup 2] [--batch-size 1] [--device cpu]

All three detectors are built from their configs with random weights (nothing is downloaded):
``configs/padet/padet_vgg16_384.yaml`` on ``MODEL.PADET.INPUT_SIZE``-square images,
``configs/Base-RetinaNet.yaml`` and ``configs/Base-RCNN-FPN.yaml`` (ResNet-50, detectron2's
default depth) on ``--image-size`` images (800x1333: the "-800" test scale). Inputs are a fixed
batch of random images already at the model's input size (no resize is timed); the steps of the
three models are interleaved round-robin (``d2ext.benchmark``) and the table gives the median
time per image and the ratio to RetinaNet (target: PADet <= 0.20x, i.e. >= 5x faster; paper
anchor: 7.5x faster than RetinaNet-101-800).

Post-processing: with random weights the class scores are not a trained model's, so the number
of boxes reaching NMS would differ arbitrarily between detectors. All three therefore use the
same class-score threshold (``--score-thresh``, default 0.05, detectron2's default) and the same
cap on detections per image (``--detections-per-image``, default 100; PADet's config ships 300).
The printed detections per image show the post-processing workload each model actually ran
(with random weights it is small and differs by model: compare the ratios with it in mind).
The footer gives each model's multiply-accumulates per image (convolutions, FAM deformable
convolutions and linear layers, counted with forward hooks): on a CPU the time ratio follows
the MAC ratio closely. RetinaNet R101-FPN, the paper's comparison, is a row without a target.
"""
import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train_net import load_config  # noqa: E402  (every method registered)
from d2ext.benchmark import (  # noqa: E402
    InferenceRunner, Row, add_benchmark_arguments, benchmark_header, build_benchmark_model,
    count_macs, markdown_table, print_report, random_image_batches, time_interleaved,
)
from padet.fam import FeatureAlignmentModule  # noqa: E402

# a model of a config (relative to the repository), seeded, on --device (d2ext.benchmark)
build = functools.partial(build_benchmark_model, load_config)


def fam_macs(fam, output):
    """MACs of a FAM's 3x3 deformable conv (torchvision's functional op, not an nn.Conv2d)."""
    return 0 if fam.mode == "none" else output.numel() * fam.weight.shape[1] * 9


PADET = "configs/padet/padet_vgg16_384.yaml"
RETINANET = "configs/Base-RetinaNet.yaml"
FASTER_RCNN = "configs/Base-RCNN-FPN.yaml"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, nargs=2, default=(800, 1333),
                        metavar=("H", "W"), help="input size of RetinaNet and Faster R-CNN")
    parser.add_argument("--score-thresh", type=float, default=0.05,
                        help="class-score threshold of all three detectors at test")
    parser.add_argument("--detections-per-image", type=int, default=100,
                        help="cap on detections per image of all three detectors")
    args = add_benchmark_arguments(parser, iters=10, warmup=2, batch_size=1).parse_args(argv)

    thresh = str(args.score_thresh)
    opts = [*args.opts, "TEST.DETECTIONS_PER_IMAGE", str(args.detections_per_image)]
    num = args.warmup + args.iters
    height, width = args.image_size
    padet_cfg, padet_model = build(
        PADET, [*opts, "MODEL.PADET.SCORE_THRESH_TEST", thresh], args.device)
    size = padet_cfg.MODEL.PADET.INPUT_SIZE
    batches = {"padet": random_image_batches(num, args.batch_size, size, size, args.device)}
    models = {"padet": padet_model}
    retinanet_opts = ["MODEL.RETINANET.SCORE_THRESH_TEST", thresh]
    for key, config, extra in (
            ("retinanet", RETINANET, retinanet_opts),
            ("faster_rcnn", FASTER_RCNN, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", thresh]),
            ("retinanet_r101", RETINANET, [*retinanet_opts, "MODEL.RESNETS.DEPTH", "101"])):
        models[key] = build(config, [*opts, *extra], args.device)[1]
        batches[key] = random_image_batches(num, args.batch_size, height, width, args.device)
    runners = {key: InferenceRunner(models[key], batches[key]) for key in
               ("retinanet", "faster_rcnn", "padet", "retinanet_r101")}
    times = time_interleaved(runners, args.iters, args.warmup, args.device)

    b = args.batch_size
    rows = [
        Row(f"RetinaNet R50-FPN {height}x{width} (baseline)", "retinanet", per=b),
        Row(f"Faster R-CNN R50-FPN {height}x{width}", "faster_rcnn", "retinanet", per=b),
        Row(f"PADet VGG-16 {size}x{size}", "padet", "retinanet", 0.20, per=b),
        Row(f"RetinaNet R101-FPN {height}x{width} (paper's comparison)", "retinanet_r101",
            "retinanet", per=b),
    ]
    table, results = markdown_table(rows, times)
    t = {row.key: res["seconds"] for row, res in zip(rows, results)}
    gmacs = {key: count_macs(models[key], batches[key][0], {FeatureAlignmentModule: fam_macs})
             / 1e9 / b for key in runners}
    print_report(
        benchmark_header("PADet vs RetinaNet and Faster R-CNN: inference time per image", args,
                         f"batch {b} random images, random weights, score threshold "
                         f"{args.score_thresh}, at most {args.detections_per_image} "
                         "detections per image"),
        table, runners,
        footer=f"PADet is {t['retinanet'] / t['padet']:.2f}x faster than RetinaNet R50-FPN, "
        f"{t['faster_rcnn'] / t['padet']:.2f}x than Faster R-CNN R50-FPN and "
        f"{t['retinanet_r101'] / t['padet']:.2f}x than RetinaNet R101-FPN (paper anchor: 7.5x "
        "faster than RetinaNet-101-800).\nGMACs per image: "
        + ", ".join(f"{k} {v:.1f}" for k, v in gmacs.items())
        + f"; RetinaNet R50 / PADet = {gmacs['retinanet'] / gmacs['padet']:.2f}, "
        f"RetinaNet R101 / PADet = {gmacs['retinanet_r101'] / gmacs['padet']:.2f}.")
    return results


if __name__ == "__main__":
    main()
