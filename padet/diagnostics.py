"""PADet diagnostics (one command each; a PNG plus the numbers as JSON next to it).

    python -m padet.diagnostics anchor_balance \
        --config-file configs/shapes/padet_vgg16_0.25x_256.yaml --num-images 100 \
        --output out/anchor_balance MODEL.WEIGHTS output/.../model_final.pth

``anchor_balance`` is the paper's Figures 1 and 2: per image, the positives and the training
negatives of the detection module for the initial anchors, APM_C (initial anchors, negatives with
p < theta ignored), APM_R (promoted anchors, every negative) and APM_CR (promoted anchors and the
theta rule, i.e. PADet), and the IoU histogram of the positives before and after promotion.

``box_regression`` checks that the two regressions learn (§3.3's L_r): per decoded level, the
correlation of the APM's and the detection module's predicted deltas with their targets over the
positives, and their smooth-L1 beside that of a zero prediction.

Images are square-warped to ``MODEL.PADET.INPUT_SIZE`` without augmentation.
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from fvcore.nn import smooth_l1_loss  # noqa: E402

from d2ext import load_config  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, BoxMode, Instances  # noqa: E402
from detectron2.structures.boxes import matched_pairwise_iou  # noqa: E402

from .anchors import flatten_anchor_maps  # noqa: E402
from .dataset_mapper import PADetDatasetMapper  # noqa: E402

__all__ = ["anchor_balance", "box_regression"]

IOU_BINS = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
DELTAS = ("dx", "dy", "dw", "dh")


def _gt_instances(dataset_dict, input_size):
    """GT boxes of a dataset dict, warped like the image to input_size x input_size."""
    sx, sy = input_size / dataset_dict["width"], input_size / dataset_dict["height"]
    annos = [a for a in dataset_dict.get("annotations", []) if not a.get("iscrowd", 0)]
    boxes = torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                          for a in annos], dtype=torch.float32).view(-1, 4)
    inst = Instances((input_size, input_size))
    inst.gt_boxes = Boxes(boxes * torch.tensor([sx, sy, sx, sy]))
    inst.gt_classes = torch.tensor([a["category_id"] for a in annos], dtype=torch.long)
    return inst


def _positive_ious(boxes, pos, matched):
    return matched_pairwise_iou(Boxes(boxes[pos]), Boxes(matched[pos])).tolist()


def _batches(model, mapper, dataset_dicts, input_size, batch_size):
    """Per batch: GT Instances, the decoded features, the initial anchors (M, 4), the APM's
    flattened logits (N, M) and its delta maps."""
    for start in range(0, len(dataset_dicts), batch_size):
        dicts = dataset_dicts[start:start + batch_size]
        gts = [_gt_instances(d, input_size).to(model.device) for d in dicts]
        images = model.preprocess_image([mapper(d) for d in dicts])
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.apm.in_features]
        logit_maps, delta_maps = model.apm.predict(features)
        anchors = model.apm.anchors(features, images.tensor.shape[-2:])
        yield gts, features, anchors, flatten_anchor_maps(logit_maps, 1).squeeze(-1), delta_maps


@torch.no_grad()
def anchor_balance(model, mapper, dataset_dicts, input_size, batch_size=4):
    """Figure 1 / Figure 2 statistics of ``model`` (a PADet) on ``dataset_dicts``, read through
    ``mapper`` (the inference PADet mapper: square warp to ``input_size``)."""
    model.eval()
    counts = {k: [0, 0] for k in ("initial", "APM_C", "APM_R", "APM_CR")}
    ious = {"initial": [], "promoted": []}
    num_images = 0
    for gts, features, anchors, logits, delta_maps in _batches(
            model, mapper, dataset_dicts, input_size, batch_size):
        promoted = model.apm.promote(anchors, flatten_anchor_maps(delta_maps, 4))
        initial = anchors.expand(len(gts), -1, -1)
        for name, boxes in (("initial", initial), ("promoted", promoted)):
            _, pos, negatives, matched = model.label_promoted(boxes, logits, gts)
            _, _, all_negatives, _ = model.label_promoted(boxes, torch.full_like(logits, 1e4), gts)
            kinds = ("initial", "APM_C") if name == "initial" else ("APM_R", "APM_CR")
            for kind, neg in zip(kinds, (all_negatives, negatives)):
                counts[kind][0] += int(pos.sum())
                counts[kind][1] += int(neg.sum())
            ious[name] += _positive_ious(boxes, pos, matched)
        num_images += len(gts)
    stats = {k: {"pos_per_image": p / num_images, "neg_per_image": n / num_images,
                 "neg_per_pos": n / max(p, 1)} for k, (p, n) in counts.items()}
    hist = {k: np.histogram(v, bins=IOU_BINS)[0].tolist() for k, v in ious.items()}
    return {"num_images": num_images, "balance": stats, "iou_bins": IOU_BINS,
            "positive_iou_histogram_per_image": {k: [c / num_images for c in v]
                                                 for k, v in hist.items()}}


def _correlation(a, b):
    """Pearson correlation of two 1-D tensors; None when it is undefined."""
    if len(a) < 2:
        return None
    r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    return None if np.isnan(r) else r


@torch.no_grad()
def box_regression(model, mapper, dataset_dicts, input_size, batch_size=4):
    """Per module ("apm": deltas of the initial anchors; "det": deltas relative to the detection
    module's reference anchors, promoted or initial) and per decoded level: the positives, the
    correlation of predicted and target (dx, dy, dw, dh), and the mean smooth-L1 per delta of
    the prediction and of a zero prediction."""
    model.eval()
    found = {"apm": [], "det": []}  # (level, predicted, target) per batch
    for gts, features, anchors, logits, delta_maps in _batches(
            model, mapper, dataset_dicts, input_size, batch_size):
        sizes = [x.shape[-2] * x.shape[-1] * a
                 for x, a in zip(features, model.apm.anchor_generator.num_anchors)]
        dev = anchors.device
        level = torch.repeat_interleave(torch.arange(len(sizes), device=dev),
                                        torch.tensor(sizes, device=dev))
        apm_deltas = flatten_anchor_maps(delta_maps, 4)
        labels, matched = model.apm.label_anchors(anchors, gts)
        pos = labels == 1
        initial = anchors.expand(len(gts), -1, -1)
        target = model.apm.box2box_transform.get_deltas(initial[pos], matched[pos])
        found["apm"].append((level.expand_as(pos)[pos], apm_deltas[pos], target))
        ref = model.apm.promote(anchors, apm_deltas) if model.apm_reg else initial
        det_deltas = flatten_anchor_maps(model.head(features, delta_maps)[1], 4)
        _, pos, _, matched = model.label_promoted(ref, logits, gts)
        target = model.box2box_transform.get_deltas(ref[pos], matched[pos])
        found["det"].append((level.expand_as(pos)[pos], det_deltas[pos], target))
    result = {"deltas": list(DELTAS)}
    for module, batches in found.items():
        level, pred, target = (torch.cat(t) for t in zip(*batches))
        rows = []
        for k in range(len(model.apm.in_features)):
            p, t = pred[level == k], target[level == k]
            loss = smooth_l1_loss(p, t, model.smooth_l1_beta, "none")
            zero = smooth_l1_loss(torch.zeros_like(t), t, model.smooth_l1_beta, "none")
            rows.append({
                "level": model.apm.in_features[k], "num_positives": len(p),
                "correlation": [_correlation(p[:, j], t[:, j]) for j in range(4)],
                "smooth_l1": loss.mean(0).tolist() if len(p) else None,
                "smooth_l1_zero_prediction": zero.mean(0).tolist() if len(p) else None,
            })
        result[module] = rows
    return result


def _plot_box_regression(result, path):
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_anchor_balance(result, path):
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


DIAGNOSTICS = {
    "anchor_balance": (anchor_balance, _plot_anchor_balance),
    "box_regression": (box_regression, _plot_box_regression),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description="PADet diagnostics")
    parser.add_argument("name", choices=list(DIAGNOSTICS))
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--dataset", help="dataset name (default: the first DATASETS.TRAIN)")
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--output", required=True, help="output path without extension")
    args, opts = parser.parse_known_args(argv)  # the rest: KEY VALUE config overrides
    cfg = load_config(args.config_file, opts)
    if cfg.MODEL.META_ARCHITECTURE != "PADet":
        raise ValueError(f"{args.config_file} is not a PADet config")
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    dicts = DatasetCatalog.get(args.dataset or cfg.DATASETS.TRAIN[0])[: args.num_images]
    mapper = PADetDatasetMapper(cfg, False)
    compute, plot = DIAGNOSTICS[args.name]
    result = compute(model, mapper, dicts, cfg.MODEL.PADET.INPUT_SIZE)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output + ".json", "w") as f:
        json.dump(result, f, indent=2)
    plot(result, args.output + ".png")
    print(json.dumps(result, indent=2))
    print(f"wrote {args.output}.png and {args.output}.json")
    return result


if __name__ == "__main__":
    main()
