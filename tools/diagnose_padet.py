#!/usr/bin/env python
"""Diagnostics of PADet (padet.analysis); each writes NAME.png and NAME.json.

    python tools/diagnose_padet.py anchor_balance --config-file <cfg> MODEL.WEIGHTS <pth>
        Figures 1-2: positives vs training negatives of the detection module with the initial
        anchors, APM_C, APM_R and APM_CR, and the positives' IoU before / after promotion.
    python tools/diagnose_padet.py box_regression --config-file <cfg> MODEL.WEIGHTS <pth>
        Per decoded level: correlation of the APM's and the detection module's predicted deltas
        with their targets, and their smooth-L1 beside that of a zero prediction.
    python tools/diagnose_padet.py promotion_sources --config-file <cfg> MODEL.WEIGHTS <pth>
        By object size: the detection module's positives per GT after promotion, and the share
        of them on anchors that were APM positives, APM negatives or ignored by the APM.
    python tools/diagnose_padet.py feature_separability --config-file <cfg> MODEL.WEIGHTS <pth>
        Per decoded level: the share of the feature variance between the GT classes at the
        initial anchors' positive locations, for the decoded level D_l (shared with the APM)
        and for the detection head's classifier input.
    python tools/diagnose_padet.py training_dynamics --checkpoints <run>/model_*.pth \
            --config-file <run>/config.yaml
        Per checkpoint (in the order given; the shell's glob sorts a run's model_<iter>.pth by
        iteration, model_final.pth last), on the first --num-images (default 16) training
        images: the detection head's right-class probability on its training positives by
        level and object size; between consecutive checkpoints, the fraction of anchor labels
        that flip. Give --checkpoints before the other options: it takes every argument up to
        the next option.

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
from detectron2.modeling import build_model  # noqa: E402
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


def plot_feature_separability(result, plt):
    fig, ax = plt.subplots(figsize=(7, 4))
    levels = result["levels"]
    rows = [result["by_level"][lvl] for lvl in levels]
    x = np.arange(len(levels))
    for offset, key, label in ((-0.2, "decoded", "decoded level D_l (shared with the APM)"),
                               (0.2, "head", "detection head, classifier input")):
        ax.bar(x + offset, [r[key] or 0 for r in rows], 0.4, label=label)
    ax.set_xticks(x, [f"{lvl}\n{r['num_locations']} loc." for lvl, r in zip(levels, rows)])
    ax.set_ylabel("between-class share of the variance")
    ax.set_title("class information at the positive locations")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_promotion_sources(result, plt):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(result["by_size"])
    rows = [result["by_size"][n] for n in names]
    x = np.arange(len(names))
    ax1.bar(x - 0.2, [r["apm_positives_per_gt"] or 0 for r in rows], 0.4, label="APM positives")
    ax1.bar(x + 0.2, [r["det_positives_per_gt"] or 0 for r in rows], 0.4,
            label="detection positives (promoted)")
    ax1.set_xticks(x, [f"{n}\n{r['num_gts']} GTs" for n, r in zip(names, rows)])
    ax1.set_ylabel("anchors per GT")
    ax1.set_title("positives per GT")
    ax1.legend()
    bottom = np.zeros(len(names))
    for source in result["sources"]:
        share = np.array([r["det_positive_sources"][source] or 0 for r in rows])
        ax2.bar(x, share, 0.6, bottom=bottom, label=source)
        bottom += share
    ax2.set_xticks(x, names)
    ax2.set_ylabel("share of the detection positives")
    ax2.set_title(f"their anchors in the APM's matching (promote p >= "
                  f"{result['apm_promote_thresh']})")
    ax2.legend()
    fig.tight_layout()
    return fig


def plot_training_dynamics(result, plt):
    rows = result["checkpoints"]
    known = all(r["iteration"] is not None for r in rows)
    x = [r["iteration"] if known else i for i, r in enumerate(rows)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for ax, key, names in ((axes[0], "by_level", result["levels"]),
                           (axes[1], "by_size", result["sizes"])):
        for name in names:
            ax.plot(x, [np.nan if r[key][name] is None else r[key][name] for r in rows], "o-",
                    label=name)
        ax.set_ylim(0, 1)
        ax.set_xlabel("iteration" if known else "checkpoint")
        ax.set_ylabel("mean right-class probability")
        ax.set_title(f"training positives, {key.replace('_', ' ')}")
        ax.legend()
    flips = result["label_flips"]
    for key in ("fraction_of_anchors", "fraction_of_positives"):
        axes[2].plot(x[1:], [np.nan if f[key] is None else f[key] for f in flips], "o-",
                     label=key.replace("_", " "))
    axes[2].set_xlabel("to " + ("iteration" if known else "checkpoint"))
    axes[2].set_ylabel("labels changed since the previous checkpoint")
    axes[2].set_title("label flips on the fixed images")
    axes[2].legend()
    fig.tight_layout()
    return fig


PLOTS = {"anchor_balance": plot_anchor_balance, "box_regression": plot_box_regression,
         "feature_separability": plot_feature_separability,
         "promotion_sources": plot_promotion_sources,
         "training_dynamics": plot_training_dynamics}


def main(argv=None):
    parser, commands = tool_parser(__doc__, {name: {} for name in PLOTS}
                                   | {"training_dynamics": {"num_images": 16}})
    for sub in commands.values():
        sub.add_argument("--dataset", help="dataset name (default: the first DATASETS.TRAIN)")
    commands["training_dynamics"].add_argument(
        "--checkpoints", nargs="+", required=True, metavar="PTH",
        help="checkpoints of one run in training order, e.g. <run>/model_*.pth")
    args = parser.parse_args(argv)
    missing = [path for path in getattr(args, "checkpoints", ()) if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"--checkpoints: no such file {missing} (config overrides go "
                                "after the other options, not after --checkpoints)")
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    if cfg.MODEL.META_ARCHITECTURE != "PADet":
        raise ValueError(f"{args.config_file} is not a PADet config")
    dicts = DatasetCatalog.get(args.dataset or cfg.DATASETS.TRAIN[0])[: args.num_images]
    data = (PADetDatasetMapper(cfg, False), dicts, cfg.MODEL.PADET.INPUT_SIZE)
    if args.name == "training_dynamics":
        result = analysis.training_dynamics(build_model(cfg), args.checkpoints, *data)
    else:
        result = getattr(analysis, args.name)(load_trained_model(cfg), *data)
    fig = PLOTS[args.name](result, pyplot())
    write_figure_and_json(fig, result, output_dir_of(args, cfg), args.name, dpi=100)
    return result


if __name__ == "__main__":
    main()
