"""Diagnostics of the IoU-balanced losses, baseline vs balanced weights (paper Fig. 3).

    python -m projects.iou_balanced.diagnostics score_by_iou --config-file CFG \\
        --baseline-weights base.pth --balanced-weights balanced.pth [--output DIR] [KEY VALUE ...]
    python -m projects.iou_balanced.diagnostics iou_share ... (same arguments)

- ``score_by_iou`` (Fig. 3a): average classification score of the detections in each IoU bin
  [0.5, 0.55), ..., [0.95, 1.0].
- ``iou_share`` (Fig. 3b): the percentage of all detections whose IoU exceeds each threshold
  0.5, 0.55, ..., 0.95.

The IoU of a detection is its highest IoU with a GT box of its class in its image (0 if none).
Both weight files are evaluated with the model of ``--config-file``: the IoU-balanced losses
change nothing at inference, so a baseline and a balanced checkpoint load into the same
architecture. Each command writes ``<name>.png`` and ``<name>.json`` to ``--output`` (default
``<OUTPUT_DIR>/diagnostics``) and prints the numbers.
"""
import argparse
import json
import logging
import os

import numpy as np
import torch

import d2ext  # noqa: F401  (registers the shapes dataset)
from d2ext import load_config
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, pairwise_iou

__all__ = ["IOU_BINS", "IOU_THRESHOLDS", "collect_detections", "score_by_iou", "iou_share",
           "main"]

logger = logging.getLogger(__name__)

IOU_BINS = [round(0.5 + 0.05 * i, 2) for i in range(11)]  # edges 0.5 ... 1.0 (Fig. 3a)
IOU_THRESHOLDS = [round(0.5 + 0.05 * i, 2) for i in range(10)]  # 0.5 ... 0.95 (Fig. 3b)


def _gt_boxes_and_classes(record):
    anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
    return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor([a["category_id"] for a in anns], dtype=torch.long))


@torch.no_grad()
def collect_detections(cfg, weights, dataset, max_images=None):
    """Run the model of ``cfg`` with ``weights`` on ``dataset``.

    Returns:
        (ndarray, ndarray): the score and the IoU (best same-class GT) of every detection.
    """
    model = build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    model.eval()
    mapper = DatasetMapper(cfg, is_train=False)
    scores, ious = [], []
    records = DatasetCatalog.get(dataset)
    for record in records[:max_images] if max_images else records:
        inst = model([mapper(dict(record))])[0]["instances"].to("cpu")
        gt_boxes, gt_classes = _gt_boxes_and_classes(record)
        iou = pairwise_iou(inst.pred_boxes, Boxes(gt_boxes))  # (D, G)
        iou[inst.pred_classes[:, None] != gt_classes[None, :]] = 0
        best = iou.max(dim=1).values if len(gt_boxes) else torch.zeros(len(inst))
        scores.append(inst.scores.numpy())
        ious.append(best.numpy())
    return np.concatenate(scores or [np.zeros(0)]), np.concatenate(ious or [np.zeros(0)])


def score_by_iou(scores, ious, edges=IOU_BINS):
    """Fig. 3a: mean score and count of the detections in each IoU bin [e_k, e_k+1) (the last
    bin includes 1.0); the mean is None for an empty bin."""
    rows = []
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = k == len(edges) - 2
        sel = (ious >= lo) & ((ious <= hi) if last else (ious < hi))
        rows.append({"iou_lo": lo, "iou_hi": hi, "count": int(sel.sum()),
                     "mean_score": float(scores[sel].mean()) if sel.any() else None})
    return rows


def iou_share(ious, thresholds=IOU_THRESHOLDS):
    """Fig. 3b: percentage of all detections whose IoU exceeds each threshold."""
    n = max(len(ious), 1)
    return [{"threshold": t, "percent": 100.0 * float((ious > t).sum()) / n}
            for t in thresholds]


def _plot(name, results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=["score_by_iou", "iou_share"])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--baseline-weights", required=True)
    parser.add_argument("--balanced-weights", required=True)
    parser.add_argument("--dataset", help="default: the config's first DATASETS.TEST")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--output", help="default: <OUTPUT_DIR>/diagnostics")
    parser.epilog = "Trailing KEY VALUE pairs override the config, as in train_net.py."
    args, opts = parser.parse_known_args(argv)
    if any(o.startswith("--") for o in opts):
        parser.error(f"unknown arguments: {[o for o in opts if o.startswith('--')]}")
    for w in (args.baseline_weights, args.balanced_weights):
        if not os.path.isfile(w):
            raise FileNotFoundError(f"weights file not found: {w}")
    cfg = load_config(args.config_file, opts)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    out_dir = args.output or os.path.join(cfg.OUTPUT_DIR, "diagnostics")
    os.makedirs(out_dir, exist_ok=True)

    results, counts = {}, {}
    for label, weights in (("baseline", args.baseline_weights),
                           ("balanced", args.balanced_weights)):
        scores, ious = collect_detections(cfg, weights, dataset, args.max_images)
        counts[label] = len(scores)
        results[label] = score_by_iou(scores, ious) if args.name == "score_by_iou" \
            else iou_share(ious)
    report = {"diagnostic": args.name, "dataset": dataset, "config_file": args.config_file,
              "weights": {"baseline": args.baseline_weights, "balanced": args.balanced_weights},
              "num_detections": counts, "results": results}
    with open(os.path.join(out_dir, f"{args.name}.json"), "w") as f:
        json.dump(report, f, indent=2)
    _plot(args.name, results, os.path.join(out_dir, f"{args.name}.png"))

    key, value = ("mean_score", "iou_lo") if args.name == "score_by_iou" else ("percent",
                                                                                 "threshold")
    print(f"{args.name} on {dataset} ({counts} detections)")
    print(f"{value:>10} {'baseline':>10} {'balanced':>10}")
    for b, r in zip(results["baseline"], results["balanced"]):
        fmt = [f"{x[key]:10.4f}" if x[key] is not None else f"{'-':>10}" for x in (b, r)]
        print(f"{b[value]:>10.2f} {fmt[0]} {fmt[1]}")
    print(f"written to {out_dir}/{args.name}.png and .json")
    return report


if __name__ == "__main__":
    main()
