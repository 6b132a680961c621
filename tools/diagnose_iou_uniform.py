#!/usr/bin/env python
"""Diagnostics of IoU-uniform R-CNN (iou_uniform.analysis); each writes NAME.png and NAME.json.

    python tools/diagnose_iou_uniform.py iou_hist --config-file <cfg> MODEL.WEIGHTS <pth>
        IoU histogram of the positive sampled RPN RoIs vs the generated samples (paper Fig. 1a).
    python tools/diagnose_iou_uniform.py loc_gain --source {generated,proposals} \
            --config-file <cfg> MODEL.WEIGHTS <pth>
        IoU after one regression vs IoU before, per input-IoU interval (Fig. 3), on jittered
        probes around the GTs (default) or on the RPN's test-time proposals; writes
        loc_gain_<source>.png/json. A baseline Faster R-CNN checkpoint works too.
    python tools/diagnose_iou_uniform.py iou_pred --config-file <cfg> MODEL.WEIGHTS <pth>
        Predicted IoU vs true IoU of the final detections, with and without EFO (Fig. 8).
    python tools/diagnose_iou_uniform.py reorder --config-file <cfg> MODEL.WEIGHTS <pth>
        Per GT, the top detection candidate (before NMS) by p_c vs by p_c x u, EFO on and off:
        how often a better-localized box loses (§3.2).
    python tools/diagnose_iou_uniform.py top_origin --config-file <cfg> MODEL.WEIGHTS <pth>
        Per GT, the top detection candidate (before NMS) under the model's own score: the IoU
        of the proposal it was regressed from and its own, per input-IoU interval. A baseline
        Faster R-CNN checkpoint works too.
    python tools/diagnose_iou_uniform.py ranking --config-file <run>/config.yaml [--results FILE]
        AP at each IoU threshold of a run's final detections as scored, under an oracle ranking
        (scored by their true IoU) and the recall: what the scores and what the boxes lose
        (d2ext.evaluation.ranking). Reads <OUTPUT_DIR>/inference/<test set>/
        coco_instances_results.json (or --results); any model's run, no weights needed.
    python tools/diagnose_iou_uniform.py towers --config-file <cfg> MODEL.WEIGHTS <pth>
        Which ReLU units of the box towers fire on generated samples of training images (dead
        units: the training collapse of docs/iou_uniform.md); a baseline checkpoint works too.

Options: --num-images N (default 100), --output-dir DIR (default <OUTPUT_DIR>/diagnostics);
trailing KEY VALUE pairs override the config, as in train_net.py.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2ext.tooling import (  # noqa: E402
    load_trained_model, output_dir_of, pyplot, tool_parser, write_figure_and_json,
)
from d2ext.evaluation import coco_gt_of, ranking_decomposition  # noqa: E402
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
    """Left: mean output vs mean input IoU per interval; right: gain per interval, each bar
    labelled with the share of boxes the regression made worse."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 5))
    rows = [r for r in numbers["below_0.5"] + numbers["bins"] if r["count"]]
    low = min([r["interval"][0] for r in rows], default=0.5)
    ax.plot([low, 1], [low, 1], "k--", lw=1, label="no change")
    ax.plot([r["mean_input_iou"] for r in rows], [r["mean_output_iou"] for r in rows], "o-",
            label=numbers["roi_heads"])
    ax.set_xlabel("input IoU")
    ax.set_ylabel("IoU after regression")
    source = {"generated": "jittered probes", "proposals": "RPN proposals at test"}
    ax.set_title(f"Localization gain, {source[numbers['source']]} (Fig. 3)")
    ax.legend()
    labels = [f"({r['interval'][0]:g}, {r['interval'][1]:g}]" for r in rows]
    bars = bx.bar(range(len(rows)), [r["gain"] for r in rows])
    bx.bar_label(bars, [f"{r['worse_fraction']:.0%} worse" for r in rows], fontsize=7)
    bx.axhline(0, color="k", lw=1)
    bx.set_xticks(range(len(rows)), labels, rotation=45, fontsize=7)
    bx.set_xlabel("input-IoU interval")
    bx.set_ylabel("mean IoU gain")
    bx.set_title("Gain per input-IoU interval, share made worse")
    return fig


def plot_reorder(numbers, plt):
    """Left: shares of GTs whose top box loses / ties / wins under p_c x u against p_c; right:
    mean true IoU of the top box under each ranking and of the best candidate."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    settings = ("efo_on", "efo_off")
    for k, outcome in enumerate(("lose", "tie", "win")):
        shares = [numbers[s][outcome] / max(numbers[s]["gts_with_candidates"], 1)
                  for s in settings]
        ax.bar([i + (k - 1) * 0.25 for i in range(2)], shares, width=0.25, label=outcome)
    ax.set_xticks(range(2), ["p_c x u, EFO on", "p_c x u, EFO off"])
    ax.set_ylabel("share of GTs with candidates")
    ax.set_title("Top box under p_c x u vs under p_c")
    ax.legend()
    names = ["top by p_c", "top by p_c x u (EFO on)", "top by p_c x u (EFO off)", "best"]
    values = [numbers["efo_on"]["mean_iou_top_cls"], numbers["efo_on"]["mean_iou_top_cls_x_iou"],
              numbers["efo_off"]["mean_iou_top_cls_x_iou"], numbers["efo_on"]["mean_iou_best"]]
    bx.bar(range(4), [v or 0 for v in values])
    bx.set_xticks(range(4), names, rotation=20, fontsize=8)
    bx.set_ylabel("mean true IoU")
    bx.set_ylim(0.5, 1)
    return fig


def plot_top_origin(numbers, plt):
    """Per input-IoU interval of the top boxes' proposals: their share of the top boxes, and
    the share of them above IoU 0.9 after regression."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    rows = numbers["intervals"]
    labels = [f"({r['interval'][0]:g}, {r['interval'][1]:g}]" for r in rows]
    total = max(numbers["top_boxes"], 1)
    ax.bar(range(len(rows)), [r["count"] / total for r in rows])
    ax.set_ylabel("share of the GTs' top boxes")
    bx.bar(range(len(rows)), [r["high_iou_fraction"] or 0 for r in rows])
    bx.set_ylabel(f"share above IoU {analysis.HIGH_IOU:g} after regression")
    for a in (ax, bx):
        a.set_xticks(range(len(rows)), labels, rotation=45, fontsize=7)
        a.set_xlabel("IoU of the proposal with its GT")
    ax.set_title(f"Where the top boxes come from ({numbers['roi_heads']})")
    return fig


def ranking(cfg, results_file, plt):
    """AP, oracle-ranked AP and recall per IoU threshold of a run's saved detections."""
    dataset = cfg.DATASETS.TEST[0]
    path = results_file or os.path.join(cfg.OUTPUT_DIR, "inference", dataset,
                                        "coco_instances_results.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"detections not found: {path} (train_net.py writes them at its "
                                "evaluation; or pass --results)")
    with open(path) as f:
        numbers = {"dataset": dataset, "results": path,
                   **ranking_decomposition(coco_gt_of(dataset), json.load(f))}
    fig, ax = plt.subplots(figsize=(6, 4))
    thresholds = [int(k[2:]) / 100 for k in numbers["AP"]]
    for key, label in (("recall", "recall"), ("AP_oracle", "AP, oracle ranking"),
                       ("AP", "AP as scored")):
        ax.plot(thresholds, list(numbers[key].values()), "o-", label=label)
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("%")
    ax.set_title("What the scores and the boxes lose")
    ax.legend()
    return numbers, fig


def plot_towers(numbers, plt):
    """Dead and active shares of each ReLU layer of the box towers."""
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(numbers["layers"])
    for k, (key, label) in enumerate((("dead_fraction", "dead units (fire on no probe)"),
                                      ("active_fraction", "active unit x probe outputs"))):
        ax.bar([i + (k - 0.5) * 0.35 for i in range(len(names))],
               [numbers["layers"][n][key] for n in names], width=0.35, label=label)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share")
    cos = numbers["input"]["mean_pairwise_cosine"]
    ax.set_title(f"Box-tower ReLUs on {numbers['probes']} generated samples "
                 f"(input cosine {cos:.2f})")
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
    commands = ("iou_hist", "loc_gain", "iou_pred", "reorder", "top_origin", "ranking", "towers")
    parser, parsers = tool_parser(__doc__, {name: {} for name in commands})
    parsers["loc_gain"].add_argument(
        "--source", choices=tuple(analysis.LOC_GAIN_SOURCES), default="generated",
        help="jittered probes around the GTs, or the RPN's test-time proposals")
    parsers["ranking"].add_argument(
        "--results", default=None, help="COCO-format detections (default: the run's own)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    plt = pyplot()
    name = args.name
    if name == "ranking":
        numbers, fig = ranking(cfg, args.results, plt)
        write_figure_and_json(fig, numbers, output_dir_of(args, cfg), name)
        return numbers
    model = load_trained_model(cfg)
    if name == "iou_pred":
        numbers, fig = iou_pred(cfg, model, args.num_images, plt)
    elif name == "loc_gain":
        numbers = analysis.loc_gain(cfg, model, args.num_images, args.source)
        fig, name = plot_loc_gain(numbers, plt), f"loc_gain_{args.source}"
    elif name == "towers":
        numbers = analysis.tower_activity(cfg, model, args.num_images)
        fig = plot_towers(numbers, plt)
    else:
        numbers = getattr(analysis, name)(cfg, model, args.num_images)
        plot = {"iou_hist": plot_iou_hist, "reorder": plot_reorder, "top_origin": plot_top_origin}
        fig = plot[name](numbers, plt)
    write_figure_and_json(fig, numbers, output_dir_of(args, cfg), name)
    return numbers


if __name__ == "__main__":
    main()
