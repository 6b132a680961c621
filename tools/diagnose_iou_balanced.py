#!/usr/bin/env python
"""Diagnostics of the IoU-balanced losses (projects.iou_balanced.analysis), baseline vs balanced
weights (paper Fig. 3); each writes NAME.png and NAME.json.

    python tools/diagnose_iou_balanced.py score_by_iou --config-file CFG \\
        --baseline-weights base.pth --balanced-weights balanced.pth [KEY VALUE ...]
        Fig. 3a: average score of the detections per IoU bin.
    python tools/diagnose_iou_balanced.py iou_share ... (same arguments)
        Fig. 3b: share of the detections above each IoU threshold.

Both weight files are evaluated with the model of --config-file: the IoU-balanced losses change
nothing at inference, so a baseline and a balanced checkpoint load into the same architecture.
Options: --dataset NAME (default: the first DATASETS.TEST), --num-images N (default: all),
--output-dir DIR (default <OUTPUT_DIR>/diagnostics); trailing KEY VALUE pairs override the
config, as in train_net.py.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2ext.tooling import (  # noqa: E402
    build_model_with_weights, output_dir_of, pyplot, tool_parser, write_figure_and_json,
)
from projects.iou_balanced import analysis  # noqa: E402
from train_net import load_config  # noqa: E402  (every method registered)

LABELS = ("baseline", "balanced")


def plot(name, results, plt):
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.4
    for j, (label, rows) in enumerate(results.items()):
        if name == "score_by_iou":
            ticks = [f"{r['iou_lo']:.2f}-{r['iou_hi']:.2f}" for r in rows]
            values = [r["mean_score"] or 0.0 for r in rows]
        else:
            ticks = [f">{r['threshold']:.2f}" for r in rows]
            values = [r["percent"] for r in rows]
        ax.bar(np.arange(len(rows)) + (j - 0.5) * width, values, width, label=label)
    ax.set_xticks(np.arange(len(ticks)))
    ax.set_xticklabels(ticks, rotation=45, ha="right")
    ax.set_xlabel("IoU with GT" if name == "score_by_iou" else "IoU threshold")
    ax.set_ylabel("average score" if name == "score_by_iou" else "detections above (%)")
    ax.set_title("Average score per IoU bin (Fig. 3a)" if name == "score_by_iou"
                 else "Share of detections above IoU thresholds (Fig. 3b)")
    ax.legend()
    fig.tight_layout()
    return fig


def main(argv=None):
    parser, commands = tool_parser(__doc__, {"score_by_iou": {"num_images": None},
                                             "iou_share": {"num_images": None}})
    for sub in commands.values():
        sub.add_argument("--baseline-weights", required=True)
        sub.add_argument("--balanced-weights", required=True)
        sub.add_argument("--dataset", help="default: the config's first DATASETS.TEST")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    weights = {"baseline": args.baseline_weights, "balanced": args.balanced_weights}
    for w in weights.values():
        if not os.path.isfile(w):
            raise FileNotFoundError(f"weights file not found: {w}")
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    results, counts = {}, {}
    for label in LABELS:
        model = build_model_with_weights(cfg, weights=weights[label]).eval()
        scores, ious = analysis.collect_detections(cfg, model, dataset, args.num_images)
        counts[label] = len(scores)
        results[label] = (analysis.score_by_iou(scores, ious) if args.name == "score_by_iou"
                          else analysis.iou_share(ious))
    report = {"diagnostic": args.name, "dataset": dataset, "config_file": args.config_file,
              "weights": weights, "num_detections": counts, "results": results}
    write_figure_and_json(plot(args.name, results, pyplot()), report, output_dir_of(args, cfg),
                          args.name)
    return report


if __name__ == "__main__":
    main()
