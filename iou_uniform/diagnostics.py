"""Diagnostics of IoU-uniform R-CNN, one command each; each writes ``<name>.png`` and
``<name>.json`` into ``--output`` (default ``<OUTPUT_DIR>/diagnostics``) and prints the numbers.

    python -m iou_uniform.diagnostics iou_hist --config-file <cfg> MODEL.WEIGHTS <pth>
        IoU histogram of the positive sampled RPN RoIs vs the generated samples (paper Fig. 1a).
    python -m iou_uniform.diagnostics loc_gain --config-file <cfg> MODEL.WEIGHTS <pth>
        IoU after regression vs IoU before, per input-IoU interval (Fig. 3). Works for
        IoUUniformROIHeads and for detectron2's StandardROIHeads (a baseline checkpoint).
    python -m iou_uniform.diagnostics iou_pred --config-file <cfg> MODEL.WEIGHTS <pth>
        Predicted IoU vs true IoU of the detections, with and without EFO (Fig. 8).

``iou_hist`` uses the first training dataset, the other two the first test dataset; images are
resized as at test time and ``--num-images`` of them are used.
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import d2ext  # noqa: F401,E402  (registers the shapes dataset)
from d2ext import load_config  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import DatasetCatalog, DatasetMapper  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, Instances, pairwise_iou  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from .roi_heads import IoUUniformROIHeads, refine_boxes  # noqa: E402
from .sample_generator import IoUUniformSampleGenerator, paired_iou  # noqa: E402

__all__ = ["iou_hist", "loc_gain", "iou_pred", "main"]

EDGES = np.round(np.arange(0.5, 1.0001, 0.05), 2)  # 10 bins of input / target IoU


def _load(args):
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    if not cfg.MODEL.WEIGHTS or not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise FileNotFoundError(f"diagnostics need a checkpoint: MODEL.WEIGHTS <file.pth>, "
                                f"got {cfg.MODEL.WEIGHTS!r}")
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    return cfg, model


def _batches(cfg, dataset, num_images):
    """Mapped dicts of ``dataset`` (test-time resize, GT ``instances`` kept), one at a time."""
    mapper = DatasetMapper(
        is_train=True,  # keeps the annotations, transformed to the resized frame
        augmentations=[T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)],
        image_format=cfg.INPUT.FORMAT,
    )
    for d in DatasetCatalog.get(dataset)[:num_images]:
        yield mapper(d)


def _features_and_proposals(model, d):
    images = model.preprocess_image([d])
    features = model.backbone(images.tensor)
    proposals, _ = model.proposal_generator(images, features, None)
    gt = d["instances"].to(model.device)
    return features, proposals[0], gt


def _histogram(values):
    counts, _ = np.histogram(np.clip(values, EDGES[0] + 1e-6, 1.0), bins=EDGES)
    return counts.tolist()


def _save(fig, numbers, output, name):
    os.makedirs(output, exist_ok=True)
    fig.savefig(os.path.join(output, f"{name}.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)
    with open(os.path.join(output, f"{name}.json"), "w") as f:
        json.dump(numbers, f, indent=1)
    print(json.dumps(numbers, indent=1))
    print(f"wrote {os.path.join(output, name)}.png/.json")


@torch.no_grad()
def iou_hist(cfg, model, num_images, output):
    """Fig. 1a: IoU with the matched GT of the positive sampled RPN RoIs (GT-appended boxes
    excluded) and of the generated samples (generator of MODEL.IOU_UNIFORM), same images."""
    heads = model.roi_heads
    generator = IoUUniformSampleGenerator(cfg)
    rpn, gen = [], []
    with EventStorage():
        for d in _batches(cfg, cfg.DATASETS.TRAIN[0], num_images):
            _, proposals, gt = _features_and_proposals(model, d)
            if len(gt) == 0:
                continue
            (p,) = heads.label_and_sample_proposals([proposals], [gt])
            p = p[p.gt_classes < heads.num_classes]
            p = p[~(p.proposal_boxes.tensor == p.gt_boxes.tensor).all(dim=1)]
            rpn.append(paired_iou(p.proposal_boxes.tensor, p.gt_boxes.tensor).cpu())
            gen.append(generator(gt.gt_boxes, gt.image_size).ious.cpu())
    rpn, gen = torch.cat(rpn).numpy(), torch.cat(gen).numpy()
    numbers = {"bin_edges": EDGES.tolist(), "images": num_images}
    for name, v in (("rpn_positives", rpn), ("generated", gen)):
        numbers[name] = {
            "count": int(len(v)), "per_image": float(len(v) / max(num_images, 1)),
            "mean_iou": float(v.mean()) if len(v) else None, "hist": _histogram(v),
            "share_above_0.8": float((v > 0.8).mean()) if len(v) else None,
        }
    fig, ax = plt.subplots(figsize=(6, 4))
    centers = (EDGES[:-1] + EDGES[1:]) / 2
    for k, (name, label) in enumerate((("rpn_positives", "RPN positive RoIs"),
                                       ("generated", "IoU-uniform samples"))):
        h = np.array(numbers[name]["hist"], dtype=float)
        ax.bar(centers + (k - 0.5) * 0.02, h / max(h.sum(), 1), width=0.02, label=label)
    ax.set_xlabel("IoU with the matched GT")
    ax.set_ylabel("fraction of samples")
    ax.set_title("Training samples of the regressor (Fig. 1a)")
    ax.legend()
    _save(fig, numbers, output, "iou_hist")
    return numbers


def _regressed_boxes(model, features, boxes, gt_classes, image_size):
    """Boxes after one pass of the model's box regressor (IoU-uniform or detectron2's)."""
    heads = model.roi_heads
    f = [features[k] for k in heads.box_in_features]
    if isinstance(heads, IoUUniformROIHeads):
        deltas, _ = heads.regress(f, [boxes])
        return refine_boxes(heads.box2box_transform, [boxes], deltas, [image_size])[0].tensor
    predictions = heads.box_predictor(heads.box_head(heads.box_pooler(f, [boxes])))
    inst = Instances(image_size, proposal_boxes=boxes)
    pred = heads.box_predictor.predict_boxes(predictions, [inst])[0]  # (R, 4 * C) or (R, 4)
    if pred.shape[1] > 4:
        pred = pred.view(len(boxes), -1, 4)[torch.arange(len(boxes)), gt_classes]
    out = Boxes(pred)
    out.clip(image_size)
    return out.tensor


# jitter table of the loc_gain probes: one narrow interval per 0.05 bin, ranges of the
# generator's interval containing it, 2,000 attempts so that the top bins fill too
# (keyed by the first decimal of the bin's lower end)
_PROBE_RANGES = {5: (0.75, (0.5, 2.0)), 6: (0.5, (0.6, 1.6)), 7: (0.3, (0.7, 1.4)),
                 8: (0.125, (0.8, 1.25)), 9: (0.125, (0.9, 1.25))}


@torch.no_grad()
def loc_gain(cfg, model, num_images, output):
    """Fig. 3: jittered boxes around test GTs in 0.05-wide input-IoU bins are regressed once;
    per bin: mean input IoU, mean output IoU with the same GT, localization gain."""
    lows = EDGES[:-1]
    tables = [_PROBE_RANGES[int(round(lo * 100)) // 10] for lo in lows]
    probe = IoUUniformSampleGenerator(
        intervals=list(zip(lows, EDGES[1:])),
        center_offsets=[t[0] for t in tables],
        scale_ranges=[t[1] for t in tables],
        num_per_interval=8, num_attempts=2000, argmax_filter=True,
    )
    ins, outs = [], []
    for d in _batches(cfg, cfg.DATASETS.TEST[0], num_images):
        features, _, gt = _features_and_proposals(model, d)
        s = probe(gt.gt_boxes, gt.image_size)
        if len(s) == 0:
            continue
        boxes = _regressed_boxes(model, features, Boxes(s.boxes), gt.gt_classes[s.gt_inds],
                                 gt.image_size)
        ins.append(s.ious.cpu())
        outs.append(paired_iou(boxes, gt.gt_boxes.tensor[s.gt_inds]).cpu())
    ins, outs = torch.cat(ins).numpy(), torch.cat(outs).numpy()
    bins = np.clip(np.digitize(ins, EDGES[1:-1], right=True), 0, len(lows) - 1)
    rows = []
    for b, lo in enumerate(lows):
        m = bins == b
        rows.append({"interval": [float(lo), float(EDGES[b + 1])], "count": int(m.sum()),
                     "mean_input_iou": float(ins[m].mean()) if m.any() else None,
                     "mean_output_iou": float(outs[m].mean()) if m.any() else None,
                     "gain": float((outs[m] - ins[m]).mean()) if m.any() else None,
                     "improved_fraction": float((outs[m] > ins[m]).mean()) if m.any() else None})
    numbers = {"roi_heads": type(model.roi_heads).__name__, "images": num_images,
               "bins": rows, "mean_gain": float((outs - ins).mean())}
    fig, ax = plt.subplots(figsize=(5, 5))
    x = [r["mean_input_iou"] for r in rows if r["count"]]
    y = [r["mean_output_iou"] for r in rows if r["count"]]
    ax.plot([0.5, 1], [0.5, 1], "k--", lw=1, label="no change")
    ax.plot(x, y, "o-", label=numbers["roi_heads"])
    ax.set_xlabel("input IoU")
    ax.set_ylabel("IoU after regression")
    ax.set_title("Localization gain per input-IoU bin (Fig. 3)")
    ax.legend()
    _save(fig, numbers, output, "loc_gain")
    return numbers


def _pearson(a, b):
    return float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else None


@torch.no_grad()
def iou_pred(cfg, model, num_images, output):
    """Fig. 8: for every detection, its predicted IoU (``pred_ious``) vs its true IoU (best IoU
    with a GT of its class), with EFO on and off; Pearson r and mean absolute error."""
    heads = model.roi_heads
    if not isinstance(heads, IoUUniformROIHeads):
        raise ValueError(f"iou_pred needs IoUUniformROIHeads, the model has {type(heads).__name__}")
    efo = heads.efo
    data = list(_batches(cfg, cfg.DATASETS.TEST[0], num_images))
    numbers, fig = {"images": num_images}, plt.figure(figsize=(10, 4.5))
    for k, on in enumerate((True, False)):
        heads.efo = on
        pred, true = [], []
        for d in data:
            (det,) = model.inference([d], do_postprocess=False)
            gt = d["instances"].to(det.pred_boxes.device)
            iou = pairwise_iou(det.pred_boxes, gt.gt_boxes)
            iou[det.pred_classes[:, None] != gt.gt_classes[None, :]] = 0
            true.append(iou.max(dim=1).values.cpu() if len(gt) else torch.zeros(len(det)))
            pred.append(det.pred_ious.cpu())
        p, t = torch.cat(pred).numpy(), torch.cat(true).numpy()
        pos = t > 0.5
        numbers["efo_on" if on else "efo_off"] = {
            "detections": int(len(p)), "pearson": _pearson(p, t),
            "pearson_true_iou_above_0.5": _pearson(p[pos], t[pos]),
            "mean_abs_error": float(np.abs(p - t).mean()),
            "mean_abs_error_true_iou_above_0.5": float(np.abs(p[pos] - t[pos]).mean())
            if pos.any() else None,
        }
        ax = fig.add_subplot(1, 2, k + 1)
        ax.scatter(t, p, s=3, alpha=0.4)
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_xlabel("true IoU")
        ax.set_ylabel("predicted IoU")
        r = numbers["efo_on" if on else "efo_off"]["pearson"]
        ax.set_title(f"EFO {'on' if on else 'off'}: r = {r if r is None else round(r, 3)}")
    heads.efo = efo
    _save(fig, numbers, output, "iou_pred")
    return numbers


DIAGNOSTICS = {"iou_hist": iou_hist, "loc_gain": loc_gain, "iou_pred": iou_pred}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s NAME --config-file FILE [--num-images N] [--output DIR] [KEY VALUE ...]",
    )
    parser.add_argument("name", choices=sorted(DIAGNOSTICS))
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--output", default=None, help="default: <OUTPUT_DIR>/diagnostics")
    # trailing KEY VALUE pairs are config overrides, as in train_net.py
    args, args.opts = parser.parse_known_args(argv)
    if len(args.opts) % 2 or any(o.startswith("-") for o in args.opts[::2]):
        parser.error(f"unrecognized arguments or unpaired KEY VALUE overrides: {args.opts}")
    cfg, model = _load(args)
    output = args.output or os.path.join(cfg.OUTPUT_DIR, "diagnostics")
    return DIAGNOSTICS[args.name](cfg, model, args.num_images, output)


if __name__ == "__main__":
    main()
