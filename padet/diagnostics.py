"""PADet diagnostics (one command each; a PNG plus the numbers as JSON next to it).

    python -m padet.diagnostics anchor_balance --config-file configs/shapes/padet_vgg16_384.yaml \
        --num-images 100 --output out/anchor_balance MODEL.WEIGHTS output/.../model_final.pth

``anchor_balance`` is the paper's Figures 1 and 2: per image, the positives and the training
negatives of the detection module for the initial anchors, APM_C (initial anchors, negatives with
p < theta ignored), APM_R (promoted anchors, every negative) and APM_CR (promoted anchors and the
theta rule, i.e. PADet), and the IoU histogram of the positives before and after promotion.
Images are square-warped to ``INPUT_SIZE`` without augmentation.
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from d2ext import load_config  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, BoxMode, Instances  # noqa: E402
from detectron2.structures.boxes import matched_pairwise_iou  # noqa: E402

from .anchors import flatten_anchor_maps  # noqa: E402
from .dataset_mapper import PADetDatasetMapper  # noqa: E402

__all__ = ["anchor_balance"]

IOU_BINS = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


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


@torch.no_grad()
def anchor_balance(model, mapper, dataset_dicts, input_size, batch_size=4):
    """Figure 1 / Figure 2 statistics of ``model`` (a PADet) on ``dataset_dicts``, read through
    ``mapper`` (the inference PADet mapper: square warp to ``input_size``)."""
    model.eval()
    counts = {k: [0, 0] for k in ("initial", "APM_C", "APM_R", "APM_CR")}
    ious = {"initial": [], "promoted": []}
    num_images = 0
    for start in range(0, len(dataset_dicts), batch_size):
        dicts = dataset_dicts[start:start + batch_size]
        inputs = [mapper(d) for d in dicts]
        gts = [_gt_instances(d, input_size).to(model.device) for d in dicts]
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.apm.in_features]
        logit_maps, delta_maps = model.apm.predict(features)
        anchors = model.apm.anchors(features, images.tensor.shape[-2:])
        logits = flatten_anchor_maps(logit_maps, 1).squeeze(-1)
        promoted = model.apm.promote(anchors, flatten_anchor_maps(delta_maps, 4))
        initial = anchors.expand(len(dicts), -1, -1)
        for name, boxes in (("initial", initial), ("promoted", promoted)):
            _, pos, negatives, matched = model.label_promoted(boxes, logits, gts)
            _, _, all_negatives, _ = model.label_promoted(boxes, torch.full_like(logits, 1e4), gts)
            kinds = ("initial", "APM_C") if name == "initial" else ("APM_R", "APM_CR")
            for kind, neg in zip(kinds, (all_negatives, negatives)):
                counts[kind][0] += int(pos.sum())
                counts[kind][1] += int(neg.sum())
            ious[name] += _positive_ious(boxes, pos, matched)
        num_images += len(dicts)
    stats = {k: {"pos_per_image": p / num_images, "neg_per_image": n / num_images,
                 "neg_per_pos": n / max(p, 1)} for k, (p, n) in counts.items()}
    hist = {k: np.histogram(v, bins=IOU_BINS)[0].tolist() for k, v in ious.items()}
    return {"num_images": num_images, "balance": stats, "iou_bins": IOU_BINS,
            "positive_iou_histogram_per_image": {k: [c / num_images for c in v]
                                                 for k, v in hist.items()}}


def _plot(result, path):
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


def main(argv=None):
    parser = argparse.ArgumentParser(description="PADet diagnostics")
    parser.add_argument("name", choices=["anchor_balance"])
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
    result = anchor_balance(model, mapper, dicts, cfg.MODEL.PADET.INPUT_SIZE)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output + ".json", "w") as f:
        json.dump(result, f, indent=2)
    _plot(result, args.output + ".png")
    print(json.dumps(result["balance"], indent=2))
    print(f"wrote {args.output}.png and {args.output}.json")
    return result


if __name__ == "__main__":
    main()
