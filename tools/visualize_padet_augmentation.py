#!/usr/bin/env python
"""What the PADet training mapper (SSD augmentation, docs/padet_data.md) feeds the model.

    python tools/visualize_padet_augmentation.py --config-file configs/padet/<cfg>.yaml \
        [--dataset NAME] [--num-images 200] [--num-shown 8] [--seed 0] [--output-dir DIR] \
        [KEY VALUE ...]

Maps --num-images training images (the first DATASETS.TRAIN unless --dataset) with the training
``PADetDatasetMapper`` and writes augmentation.png (the first --num-shown augmented samples with
their boxes) and augmentation.json (boxes per image and box shorter-side quantiles, as a
fraction of the input side, before and after augmentation) into --output-dir (default
<OUTPUT_DIR>/diagnostics), and prints the JSON.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2ext.tooling import (  # noqa: E402
    add_tool_arguments, output_dir_of, pyplot, write_figure_and_json,
)
from detectron2.data import DatasetCatalog  # noqa: E402
from padet.analysis import augmentation_statistics  # noqa: E402
from padet.dataset_mapper import PADetDatasetMapper  # noqa: E402
from train_net import load_config  # noqa: E402  (every method registered)


def plot_samples(samples, image_format, plt):
    """The mapped samples with their GT boxes, up to four per row."""
    cols = min(4, len(samples))
    rows = (len(samples) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, sample in zip(axes.flat, samples):
        img = sample["image"].permute(1, 2, 0).numpy()
        ax.imshow(img[..., ::-1] if image_format == "BGR" else img)
        for x0, y0, x1, y1 in sample["instances"].gt_boxes.tensor.tolist():
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1))
        ax.set_title(f"{len(sample['instances'])} boxes", fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None, help="default: DATASETS.TRAIN[0]")
    parser.add_argument("--num-shown", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = add_tool_arguments(parser, num_images=200).parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    dataset = args.dataset or cfg.DATASETS.TRAIN[0]
    dicts = DatasetCatalog.get(dataset)[: args.num_images]
    if not dicts:
        raise ValueError(f"dataset {dataset!r} has no images")
    np.random.seed(args.seed)
    mapper = PADetDatasetMapper(cfg, True)
    stats, samples = augmentation_statistics(mapper, dicts, cfg.MODEL.PADET.INPUT_SIZE)
    stats.update(dataset=dataset, seed=args.seed)
    fig = plot_samples(samples[: args.num_shown], cfg.INPUT.FORMAT, pyplot())
    write_figure_and_json(fig, stats, output_dir_of(args, cfg), "augmentation", dpi=100)
    return stats


if __name__ == "__main__":
    main()
