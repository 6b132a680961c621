"""Diagnostic: what the PADet training mapper (SSD augmentation, spec §2.8) feeds the model.

    python -m padet.augmentation_diagnostics [--config-file configs/...] [--dataset NAME]
        [--num-images 200] [--num-shown 8] [--seed 0] --output DIR [KEY VALUE ...]

Maps ``--num-images`` training images (the first of ``DATASETS.TRAIN`` unless ``--dataset``)
with the training ``PADetDatasetMapper``
and writes ``DIR/augmentation.png`` (the first ``--num-shown`` augmented samples with their
boxes) and ``DIR/augmentation.json`` (boxes per image and box shorter-side quantiles, as a
fraction of the input side, before and after augmentation), and prints the JSON.
"""
import argparse
import json
import os

import numpy as np

from d2ext.config import add_all_configs
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from .dataset_mapper import PADetDatasetMapper

__all__ = ["augmentation_statistics", "main"]

QUANTILES = (0.1, 0.5, 0.9)


def _short_sides(boxes: np.ndarray) -> np.ndarray:
    return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def augmentation_statistics(mapper, dataset_dicts, input_size):
    """Map every dict once; returns (statistics dict, list of mapped samples)."""
    before, after, counts_before, counts_after, samples = [], [], [], [], []
    for d in dataset_dicts:
        annos = [a for a in d.get("annotations", []) if a.get("iscrowd", 0) == 0]
        boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos],
            dtype=np.float64,
        ).reshape(-1, 4)
        out = mapper(d)
        out_boxes = out["instances"].gt_boxes.tensor.numpy()
        before.append(_short_sides(boxes) / np.array([d["width"], d["height"]]).min())
        after.append(_short_sides(out_boxes) / input_size)
        counts_before.append(len(boxes))
        counts_after.append(len(out_boxes))
        samples.append(out)
    before, after = np.concatenate(before), np.concatenate(after)

    def quantiles(x):
        return {f"q{int(q * 100)}": float(np.quantile(x, q)) if len(x) else None for q in QUANTILES}

    counts_before, counts_after = np.array(counts_before), np.array(counts_after)
    stats = {
        "num_images": len(samples),
        "boxes_per_image_before": float(np.mean(counts_before)),
        "boxes_per_image_after": float(np.mean(counts_after)),
        "fraction_images_losing_boxes": float(np.mean(counts_after < counts_before)),
        "fraction_images_without_boxes_after": float(np.mean(counts_after == 0)),
        "short_side_over_image_before": quantiles(before),
        "short_side_over_input_after": quantiles(after),
    }
    return stats, samples


def _plot(samples, image_format, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(samples))
    rows = (len(samples) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, sample in zip(axes.flat, samples):
        img = sample["image"].permute(1, 2, 0).numpy()
        ax.imshow(img[..., ::-1] if image_format == "BGR" else img)
        for x0, y0, x1, y1 in sample["instances"].gt_boxes.tensor.tolist():
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1))
        ax.set_title(f"{len(sample['instances'])} boxes", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default="", help="a PADet config (default: the defaults)")
    parser.add_argument("--dataset", default=None, help="default: DATASETS.TRAIN[0]")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--num-shown", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    args = parser.parse_args(argv)

    import d2ext.shapes_dataset  # noqa: F401  (registers shapes_train / shapes_val)

    cfg = get_cfg()
    add_all_configs(cfg)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    dataset = args.dataset or cfg.DATASETS.TRAIN[0]
    dicts = DatasetCatalog.get(dataset)[: args.num_images]
    if not dicts:
        raise ValueError(f"dataset {dataset!r} has no images")

    np.random.seed(args.seed)
    mapper = PADetDatasetMapper(cfg, True)
    stats, samples = augmentation_statistics(mapper, dicts, cfg.MODEL.PADET.INPUT_SIZE)
    stats.update(dataset=dataset, seed=args.seed)
    os.makedirs(args.output, exist_ok=True)
    png = os.path.join(args.output, "augmentation.png")
    _plot(samples[: args.num_shown], cfg.INPUT.FORMAT, png)
    with open(os.path.join(args.output, "augmentation.json"), "w") as f:
        json.dump(stats, f, indent=2)
    print(json.dumps(stats, indent=2))
    return stats


if __name__ == "__main__":
    main()
