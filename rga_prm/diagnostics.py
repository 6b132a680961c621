"""RGA / PRM diagnostics, one command each; every command writes a PNG and its numbers (JSON).

    # paper Fig. 1(a): positive RoIs sampled per iteration (from training metrics)
    python -m rga_prm.diagnostics positives --metrics RUN/metrics.json [RUN2/metrics.json ...]
    # paper Fig. 3: training accuracy on positive and on negative RoIs, without vs with RGA
    python -m rga_prm.diagnostics accuracy --metrics BASE/metrics.json RGA/metrics.json \
        --labels baseline RGA
    # paper Fig. 6: the PRM modules' score distributions and their absolute difference
    python -m rga_prm.diagnostics scores --config-file configs/shapes/rga_prm_R_18_FPN.yaml \
        MODEL.WEIGHTS output/shapes/rga_prm_R_18_FPN/model_final.pth
"""
import argparse
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

__all__ = ["positives", "accuracy", "scores", "main"]

FG_KEY = re.compile(r"^(.*)roi_head/num_fg_samples(_m\d+)?$")


def read_metrics(path):
    """detectron2's metrics.json (one JSON object per line)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _series(metrics, key):
    rows = [(m["iteration"], m[key]) for m in metrics if key in m and "iteration" in m]
    return [r[0] for r in rows], [r[1] for r in rows]


def _labels(paths, labels):
    labels = labels or [os.path.basename(os.path.dirname(os.path.abspath(p))) for p in paths]
    if len(labels) != len(paths):
        raise ValueError(f"--labels needs one label per metrics file ({len(paths)})")
    return labels


def _save(fig, numbers, output_dir, name):
    os.makedirs(output_dir, exist_ok=True)
    png, js = os.path.join(output_dir, name + ".png"), os.path.join(output_dir, name + ".json")
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    with open(js, "w") as f:
        json.dump(numbers, f, indent=1)
    print(json.dumps({k: v for k, v in numbers.items() if k != "series"}, indent=1))
    print(f"wrote {png} and {js}")
    return png, js


def positives(metrics_files, labels=None, output_dir="output/rga_prm/diagnostics"):
    """Fig. 1(a): positives per image sampled for the R-CNN head(s) over iterations
    (``roi_head/num_fg_samples[_m<k>]``, medians over detectron2's 20-iteration window)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    numbers = {"series": {}, "first_logged": {}, "last_logged": {}}
    for path, label in zip(metrics_files, _labels(metrics_files, labels)):
        metrics = read_metrics(path)
        keys = sorted({k for m in metrics for k in m if FG_KEY.match(k)})
        if not keys:
            raise ValueError(f"{path} logs no roi_head/num_fg_samples: not a two-stage run")
        for key in keys:
            it, fg = _series(metrics, key)
            name = f"{label}: {key}"
            ax.plot(it, fg, label=name)
            numbers["series"][name] = {"iteration": it, "num_fg_samples": fg}
            numbers["first_logged"][name], numbers["last_logged"][name] = fg[0], fg[-1]
    ax.set_xlabel("iteration")
    ax.set_ylabel("positive RoIs per image")
    ax.set_title("Positive proposals sampled for R-CNN (paper Fig. 1a)")
    ax.legend(fontsize=7)
    return _save(fig, numbers, output_dir, "positives")


def _accuracies(metrics, module):
    """(iterations, positive accuracy, negative accuracy, source) of one run."""
    prefix = "" if any("fast_rcnn/fg_cls_accuracy" in m for m in metrics) else f"m{module}/"
    fg_key, bg_key = prefix + "fast_rcnn/fg_cls_accuracy", prefix + "fast_rcnn/bg_cls_accuracy"
    if not any(fg_key in m for m in metrics):
        raise ValueError(f"no {fg_key} in the metrics (is --module right?)")
    if any(bg_key in m for m in metrics):
        it, fg = _series(metrics, fg_key)
        bg = [m[bg_key] for m in metrics if fg_key in m and "iteration" in m]
        return it, fg, bg, bg_key
    # detectron2's own heads log cls/fg accuracy and sample counts but not background accuracy:
    # bg = (acc * (n_fg + n_bg) - fg_acc * n_fg) / n_bg, from the logged (windowed) values
    needed = ("fast_rcnn/cls_accuracy", fg_key, "roi_head/num_fg_samples",
              "roi_head/num_bg_samples")
    rows = [m for m in metrics if all(k in m for k in needed)]
    it = [m["iteration"] for m in rows]
    fg = [m[fg_key] for m in rows]
    bg = [(m[needed[0]] * (m[needed[2]] + m[needed[3]]) - m[fg_key] * m[needed[2]]) / m[needed[3]]
          for m in rows]
    return it, fg, bg, "derived from cls_accuracy, fg_cls_accuracy and sample counts"


def accuracy(metrics_files, labels=None, module=0, output_dir="output/rga_prm/diagnostics"):
    """Fig. 3: training classification accuracy on positive RoIs (left) and negative RoIs
    (middle) over iterations, e.g. for a baseline and an RGA run."""
    fig, (ax_pos, ax_neg) = plt.subplots(1, 2, figsize=(11, 4))
    numbers = {"series": {}, "mean_positive_accuracy": {}, "mean_negative_accuracy": {},
               "negative_accuracy_source": {}}
    for path, label in zip(metrics_files, _labels(metrics_files, labels)):
        it, fg, bg, source = _accuracies(read_metrics(path), module)
        ax_pos.plot(it, fg, label=label)
        ax_neg.plot(it, bg, label=label)
        numbers["series"][label] = {"iteration": it, "positive": fg, "negative": bg}
        numbers["mean_positive_accuracy"][label] = float(np.mean(fg))
        numbers["mean_negative_accuracy"][label] = float(np.mean(bg))
        numbers["negative_accuracy_source"][label] = source
    for ax, title in ((ax_pos, "positive RoIs"), (ax_neg, "negative RoIs")):
        ax.set_xlabel("iteration")
        ax.set_ylabel("training accuracy")
        ax.set_title(f"R-CNN accuracy on {title} (paper Fig. 3)")
        ax.legend()
    return _save(fig, numbers, output_dir, "accuracy")


@torch.no_grad()
def module_scores(model, data_loader, max_images):
    """Per ensemble detection, every PRM module's own softmax score of the detected class."""
    roi_heads = model.roi_heads
    if not hasattr(roi_heads, "prm") or isinstance(roi_heads.box_head[0], torch.nn.ModuleList):
        raise ValueError("the scores diagnostic needs ParallelROIHeads (non-cascade PRM)")
    per_module, seen = [[] for _ in roi_heads.box_head], 0
    for inputs in data_loader:
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        box_features = roi_heads.box_pooler([features[f] for f in roi_heads.box_in_features],
                                            [p.proposal_boxes for p in proposals])
        predictor, predictions = roi_heads.prm.test_predictions(
            box_features, roi_heads.box_head, roi_heads.box_predictor)
        instances, kept = predictor.inference(predictions, proposals)
        sizes = [len(p) for p in proposals]
        for k, (head, pred) in enumerate(zip(roi_heads.box_head, roi_heads.box_predictor)):
            probs = pred.predict_probs(pred(head(box_features)), proposals)
            for p, inst, idx in zip(probs, instances, kept):
                per_module[k].append(p[idx, inst.pred_classes])
        seen += len(sizes)
        if seen >= max_images:
            break
    return [torch.cat(s).numpy() if s else np.zeros(0) for s in per_module]


def scores(config_file, opts=(), max_images=300, output_dir="output/rga_prm/diagnostics"):
    """Fig. 6: score distributions of the PRM modules (left) and the absolute difference of
    corresponding scores (right), on the ensemble's detections of DATASETS.TEST[0]."""
    import d2ext  # noqa: F401  (registers the shapes dataset)
    import rga_prm  # noqa: F401  (registration)
    from d2ext import load_config
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import build_detection_test_loader
    from detectron2.modeling import build_model

    cfg = load_config(config_file, opts)
    cfg.freeze()
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    loader = build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])
    per_module = module_scores(model, loader, max_images)
    fractions = model.roi_heads.prm.positive_fractions
    fig, (ax_s, ax_d) = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(0, 1, 21)
    for k, s in enumerate(per_module):
        ax_s.hist(s, bins=bins, alpha=0.5, label=f"module {k} (fraction {fractions[k]:g})")
    ax_s.set_xlabel("score")
    ax_s.set_title("PRM module scores (paper Fig. 6 left)")
    ax_s.legend()
    numbers = {"num_detections": int(len(per_module[0])), "images": min(max_images, len(loader)),
               "positive_fractions": list(fractions),
               "mean_score": [float(s.mean()) if len(s) else None for s in per_module]}
    if len(per_module) >= 2:
        diff = np.abs(per_module[0] - per_module[1])
        ax_d.hist(diff, bins=bins)
        numbers["fraction_abs_diff_gt_0.1"] = float((diff > 0.1).mean()) if len(diff) else None
        numbers["mean_abs_diff"] = float(diff.mean()) if len(diff) else None
        numbers["paper_anchor"] = "COCO minival, 1:1 vs 1:9: more than 21.9% differ by > 0.1"
    ax_d.set_xlabel("|score module 0 - score module 1|")
    ax_d.set_title("absolute score difference (paper Fig. 6 right)")
    return _save(fig, numbers, output_dir, "scores")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("positives", "accuracy"):
        p = sub.add_parser(name)
        p.add_argument("--metrics", nargs="+", required=True, help="metrics.json of each run")
        p.add_argument("--labels", nargs="+", help="one label per metrics file")
        p.add_argument("--output-dir", default="output/rga_prm/diagnostics")
        if name == "accuracy":
            p.add_argument("--module", type=int, default=0, help="PRM module of PRM runs")
    p = sub.add_parser("scores")
    p.add_argument("--config-file", required=True)
    p.add_argument("--max-images", type=int, default=300)
    p.add_argument("--output-dir", default="output/rga_prm/diagnostics")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if args.command == "positives":
        return positives(args.metrics, args.labels, args.output_dir)
    if args.command == "accuracy":
        return accuracy(args.metrics, args.labels, args.module, args.output_dir)
    return scores(args.config_file, args.opts, args.max_images, args.output_dir)


if __name__ == "__main__":
    main()
