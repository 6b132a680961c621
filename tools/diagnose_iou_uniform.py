#!/usr/bin/env python
"""Diagnostics of IoU-uniform R-CNN (iou_uniform.analysis); each writes NAME.png and NAME.json.

    python tools/diagnose_iou_uniform.py iou_hist --config-file <cfg> MODEL.WEIGHTS <pth>
        IoU histogram of the positive sampled RPN RoIs vs the generated samples (paper Fig. 1a).
    python tools/diagnose_iou_uniform.py loc_gain --config-file <cfg> MODEL.WEIGHTS <pth>
        IoU after regression vs IoU before, per input-IoU bin (Fig. 3); a baseline Faster
        R-CNN checkpoint works too.
    python tools/diagnose_iou_uniform.py iou_pred --config-file <cfg> MODEL.WEIGHTS <pth>
        Predicted IoU vs true IoU of the detections, with and without EFO (Fig. 8).

Options: --num-images N (default 100), --output-dir DIR (default <OUTPUT_DIR>/diagnostics);
trailing KEY VALUE pairs override the config, as in train_net.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2ext.tooling import (  # noqa: E402
    load_trained_model, output_dir_of, pyplot, tool_parser, write_figure_and_json,
)
from iou_uniform import analysis  # noqa: E402
from train_net import load_config  # noqa: E402  (every method registered)


def plot_iou_hist(numbers, plt):
    fig, ax = plt.subplots(figsize=(6, 4))
    edges = analysis.EDGES
    centers = (edges[:-1] + edges[1:]) / 2
    for k, (name, label) in enumerate((("rpn_positives", "RPN positive RoIs"),
                                       ("generated", "IoU-uniform samples"))):
        h = [float(c) for c in numbers[name]["hist"]]
        ax.bar(centers + (k - 0.5) * 0.02, [c / max(sum(h), 1) for c in h], width=0.02,
               label=label)
    ax.set_xlabel("IoU with the matched GT")
    ax.set_ylabel("fraction of samples")
    ax.set_title("Training samples of the regressor (Fig. 1a)")
    ax.legend()
    return fig


def plot_loc_gain(numbers, plt):
    fig, ax = plt.subplots(figsize=(5, 5))
    rows = [r for r in numbers["bins"] if r["count"]]
    ax.plot([0.5, 1], [0.5, 1], "k--", lw=1, label="no change")
    ax.plot([r["mean_input_iou"] for r in rows], [r["mean_output_iou"] for r in rows], "o-",
            label=numbers["roi_heads"])
    ax.set_xlabel("input IoU")
    ax.set_ylabel("IoU after regression")
    ax.set_title("Localization gain per input-IoU bin (Fig. 3)")
    ax.legend()
    return fig


def iou_pred(cfg, model, num_images, plt):
    """Fig. 8 numbers, EFO on and off, and the scatter plot of both."""
    numbers, fig = {"images": num_images}, plt.figure(figsize=(10, 4.5))
    for k, efo in enumerate((True, False)):
        pred, true = analysis.iou_pred_pairs(cfg, model, num_images, efo)
        key = "efo_on" if efo else "efo_off"
        numbers[key] = analysis.iou_pred_summary(pred, true)
        ax = fig.add_subplot(1, 2, k + 1)
        ax.scatter(true, pred, s=3, alpha=0.4)
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_xlabel("true IoU")
        ax.set_ylabel("predicted IoU")
        r = numbers[key]["pearson"]
        ax.set_title(f"EFO {'on' if efo else 'off'}: r = {r if r is None else round(r, 3)}")
    return numbers, fig


def main(argv=None):
    parser, _ = tool_parser(__doc__, {"iou_hist": {}, "loc_gain": {}, "iou_pred": {}})
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    model = load_trained_model(cfg)
    plt = pyplot()
    if args.name == "iou_pred":
        numbers, fig = iou_pred(cfg, model, args.num_images, plt)
    else:
        numbers = getattr(analysis, args.name)(cfg, model, args.num_images)
        fig = (plot_iou_hist if args.name == "iou_hist" else plot_loc_gain)(numbers, plt)
    write_figure_and_json(fig, numbers, output_dir_of(args, cfg), args.name)
    return numbers


if __name__ == "__main__":
    main()
