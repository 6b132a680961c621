#!/usr/bin/env python
"""Diagnostics of RGA and PRM (rga_prm.analysis); each writes NAME.png and NAME.json.

    # paper Fig. 1(a): positive RoIs sampled per iteration (from training metrics)
    python tools/diagnose_rga_prm.py positives --metrics RUN/metrics.json [RUN2/metrics.json ...]
    # paper Fig. 3: training accuracy on positive and on negative RoIs, without vs with RGA
    python tools/diagnose_rga_prm.py accuracy --metrics BASE/metrics.json RGA/metrics.json \\
        --labels baseline RGA [--module K]
    # paper Fig. 6: the PRM modules' score distributions and their absolute difference
    python tools/diagnose_rga_prm.py scores --config-file configs/shapes/rga_prm_R_18_FPN.yaml \\
        MODEL.WEIGHTS output/shapes/rga_prm_R_18_FPN/model_final.pth

Options: --num-images N (scores; default 300), --output-dir DIR (default <OUTPUT_DIR>/diagnostics
of the config, or of the first run's directory for the metrics commands); trailing KEY VALUE
pairs override the config, as in train_net.py.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2ext.tooling import (  # noqa: E402
    load_trained_model, output_dir_of, pyplot, tool_parser, write_figure_and_json,
)
from detectron2.data import build_detection_test_loader  # noqa: E402
from rga_prm import analysis  # noqa: E402
from train_net import load_config  # noqa: E402  (every method registered)


def plot_positives(numbers, plt):
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in numbers["series"].items():
        ax.plot(s["iteration"], s["num_fg_samples"], label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("positive RoIs per image")
    ax.set_title("Positive proposals sampled for R-CNN (paper Fig. 1a)")
    ax.legend(fontsize=7)
    return fig


def plot_accuracy(numbers, plt):
    fig, (ax_pos, ax_neg) = plt.subplots(1, 2, figsize=(11, 4))
    for label, s in numbers["series"].items():
        ax_pos.plot(s["iteration"], s["positive"], label=label)
        ax_neg.plot(s["iteration"], s["negative"], label=label)
    for ax, title in ((ax_pos, "positive RoIs"), (ax_neg, "negative RoIs")):
        ax.set_xlabel("iteration")
        ax.set_ylabel("training accuracy")
        ax.set_title(f"R-CNN accuracy on {title} (paper Fig. 3)")
        ax.legend()
    return fig


def plot_scores(per_module, fractions, plt):
    fig, (ax_s, ax_d) = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(0, 1, 21)
    for k, s in enumerate(per_module):
        ax_s.hist(s, bins=bins, alpha=0.5, label=f"module {k} (fraction {fractions[k]:g})")
    ax_s.set_xlabel("score")
    ax_s.set_title("PRM module scores (paper Fig. 6 left)")
    ax_s.legend()
    if len(per_module) >= 2:
        ax_d.hist(np.abs(per_module[0] - per_module[1]), bins=bins)
    ax_d.set_xlabel("|score module 0 - score module 1|")
    ax_d.set_title("absolute score difference (paper Fig. 6 right)")
    return fig


def main(argv=None):
    parser, commands = tool_parser(
        __doc__, {"positives": None, "accuracy": None, "scores": {"num_images": 300}})
    for name in ("positives", "accuracy"):
        commands[name].add_argument("--metrics", nargs="+", required=True,
                                    help="metrics.json of each run")
        commands[name].add_argument("--labels", nargs="+", help="one label per metrics file")
    commands["accuracy"].add_argument("--module", type=int, default=0,
                                      help="PRM module of PRM runs")
    args = parser.parse_args(argv)
    plt = pyplot()
    if args.name == "scores":
        cfg = load_config(args.config_file, args.opts)
        cfg.freeze()
        model = load_trained_model(cfg)
        loader = build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])
        per_module = analysis.module_scores(model, loader, args.num_images)
        fractions = model.roi_heads.prm.positive_fractions
        numbers = analysis.scores(per_module, fractions, min(args.num_images, len(loader)))
        fig = plot_scores(per_module, fractions, plt)
        output_dir = output_dir_of(args, cfg)
    else:
        if args.name == "positives":
            numbers = analysis.positives(args.metrics, args.labels)
            fig = plot_positives(numbers, plt)
        else:
            numbers = analysis.accuracy(args.metrics, args.labels, args.module)
            fig = plot_accuracy(numbers, plt)
        run_dir = os.path.dirname(os.path.abspath(args.metrics[0]))
        output_dir = args.output_dir or os.path.join(run_dir, "diagnostics")
    return write_figure_and_json(fig, numbers, output_dir, args.name, dpi=100,
                                 unprinted=("series",))


if __name__ == "__main__":
    main()
