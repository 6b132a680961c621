#!/usr/bin/env python
"""Diagnostics of PADet (padet.analysis); each writes NAME.png and NAME.json.

    python tools/diagnose_padet.py anchor_balance --config-file <cfg> MODEL.WEIGHTS <pth>
        Figures 1-2: positives vs training negatives of the detection module with the initial
        anchors, APM_C, APM_R and APM_CR, and the positives' IoU before / after promotion.
    python tools/diagnose_padet.py box_regression --config-file <cfg> MODEL.WEIGHTS <pth>
        Per decoded level: correlation of the APM's and the detection module's predicted deltas
        with their targets, and their smooth-L1 beside that of a zero prediction.

Options: --dataset NAME (default: the first DATASETS.TRAIN), --num-images N (default 100),
--output-dir DIR (default <OUTPUT_DIR>/diagnostics); trailing KEY VALUE pairs override the
config, as in train_net.py. Images are square-warped to MODEL.PADET.INPUT_SIZE without
augmentation.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2ext.tooling import (  # noqa: E402
    load_trained_model, output_dir_of, pyplot, tool_parser, write_figure_and_json,
)
from detectron2.data import DatasetCatalog  # noqa: E402
from padet import analysis  # noqa: E402
from padet.dataset_mapper import PADetDatasetMapper  # noqa: E402
from train_net import load_config  # noqa: E402  (every method registered)


def plot_box_regression(result, plt):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, module in zip(axes, ("apm", "det")):
        rows = result[module]
        x = np.arange(len(rows))
        for j, name in enumerate(result["deltas"]):
            r = [row["correlation"][j] for row in rows]
            ax.bar(x + 0.2 * (j - 1.5), [np.nan if v is None else v for v in r], 0.2, label=name)
        ax.set_xticks(x, [f"{row['level']}\n{row['num_positives']} pos" for row in rows])
        ax.set_title(f"{module}: predicted vs target deltas")
        ax.axhline(0, color="k", lw=0.5)
    axes[0].set_ylabel("correlation over the positives")
    axes[0].legend()
    fig.tight_layout()
    return fig


def plot_anchor_balance(result, plt):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(result["balance"])
    pos = [result["balance"][n]["pos_per_image"] for n in names]
    neg = [result["balance"][n]["neg_per_image"] for n in names]
    x = np.arange(len(names))
    ax1.bar(x - 0.2, pos, 0.4, label="positives")
    ax1.bar(x + 0.2, neg, 0.4, label="training negatives")
    ax1.set_yscale("log")
    ax1.set_xticks(x, [f"{n}\n1:{result['balance'][n]['neg_per_pos']:.0f}" for n in names])
    ax1.set_ylabel("anchors per image")
    ax1.set_title("Figure 1: positives vs negatives")
    ax1.legend()
    bins = result["iou_bins"]
    labels = [f"{a:.1f}-{b:.1f}" for a, b in zip(bins[:-1], bins[1:])]
    x = np.arange(len(labels))
    for off, (name, h) in zip((-0.2, 0.2), result["positive_iou_histogram_per_image"].items()):
        ax2.bar(x + off, h, 0.4, label=name)
    ax2.set_xticks(x, labels)
    ax2.set_xlabel("IoU with the matched GT")
    ax2.set_ylabel("positives per image")
    ax2.set_title("Figure 2: positives before / after promotion")
    ax2.legend()
    fig.tight_layout()
    return fig


PLOTS = {"anchor_balance": plot_anchor_balance, "box_regression": plot_box_regression}


def main(argv=None):
    parser, commands = tool_parser(__doc__, {name: {} for name in PLOTS})
    for sub in commands.values():
        sub.add_argument("--dataset", help="dataset name (default: the first DATASETS.TRAIN)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    if cfg.MODEL.META_ARCHITECTURE != "PADet":
        raise ValueError(f"{args.config_file} is not a PADet config")
    model = load_trained_model(cfg)
    dicts = DatasetCatalog.get(args.dataset or cfg.DATASETS.TRAIN[0])[: args.num_images]
    result = getattr(analysis, args.name)(model, PADetDatasetMapper(cfg, False), dicts,
                                          cfg.MODEL.PADET.INPUT_SIZE)
    fig = PLOTS[args.name](result, pyplot())
    write_figure_and_json(fig, result, output_dir_of(args, cfg), args.name, dpi=100)
    return result


if __name__ == "__main__":
    main()
