#!/usr/bin/env python
"""A trained model's detections beside the ground truth, one image per row, in one PNG.

    python tools/visualize.py --config-file configs/shapes/faster_rcnn_R_18_FPN.yaml \\
        [--num-images 6] [--score-thresh 0.5] [--output-dir DIR] \\
        MODEL.WEIGHTS output/shapes/faster_rcnn_R_18_FPN/model_final.pth [KEY VALUE ...]

Reads the first --num-images images of the config's first DATASETS.TEST through the test loader
train_net.py evaluates with (PADet's square resize included), runs the model and draws, with
detectron2's Visualizer and the dataset's class names, the ground truth (left) and the
predictions scoring at least --score-thresh (right) on the original image. Writes
detections.png and detections.json (per image: id, file, number of GT and predicted boxes) into
--output-dir (default <OUTPUT_DIR>/visualize) and prints the PNG's path.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2ext.tooling import (  # noqa: E402
    add_tool_arguments, load_trained_model, output_dir_of, pyplot, write_figure_and_json,
)
from d2ext.visualization import detection_figure, draw_detections  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from train_net import Trainer, load_config  # noqa: E402  (every method registered)

OUTPUT_SUBDIR = "visualize"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--score-thresh", type=float, default=0.5,
                        help="least score of a drawn prediction (default %(default)s)")
    args = add_tool_arguments(parser, num_images=6, output_subdir=OUTPUT_SUBDIR).parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    model = load_trained_model(cfg)
    dataset = cfg.DATASETS.TEST[0]
    dicts = DatasetCatalog.get(dataset)
    if not dicts:
        raise ValueError(f"dataset {dataset!r} has no images")
    panels, records = draw_detections(
        model, Trainer.build_test_loader(cfg, dataset), dicts, MetadataCatalog.get(dataset),
        num_images=args.num_images, score_thresh=args.score_thresh,
    )
    fig = detection_figure(panels, records, args.score_thresh, pyplot())
    numbers = {"dataset": dataset, "weights": cfg.MODEL.WEIGHTS,
               "score_thresh": args.score_thresh, "images": records}
    png, _ = write_figure_and_json(fig, numbers, output_dir_of(args, cfg, OUTPUT_SUBDIR),
                                   "detections", dpi=fig.dpi, unprinted=("images",))
    return png, numbers


if __name__ == "__main__":
    main()
