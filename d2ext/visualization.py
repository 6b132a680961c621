"""Pictures of a trained model and of its training (``tools/visualize.py``,
``tools/plot_curves.py``).

- :func:`draw_detections` and :func:`detection_figure`: a model's detections beside the ground
  truth, drawn by detectron2's ``Visualizer``, one image per row.
- :func:`training_curves` and :func:`curves_figure`: the loss curves of one or more runs, read
  from their ``metrics.json``, and their final AP.

Works for every meta-architecture: the caller passes the test loader and the model, so PADet's
square-resizing mapper is used where its model needs it (``train_net.Trainer.build_test_loader``).
"""
import os
import re

import numpy as np
import torch

from detectron2.data.detection_utils import read_image
from detectron2.utils.visualizer import ColorMode, Visualizer

from .run_state import read_metrics

__all__ = ["draw_detections", "detection_figure", "training_curves", "curves_figure"]

# a drawn panel's shorter side, at least: class labels stay legible on small images (shapes
# images are ~160 px)
MIN_PANEL_SIDE = 320
# one panel pixel per figure pixel
DETECTION_DPI = 100
TITLE_INCHES = 0.3
# the final evaluation's summary metrics in metrics.json: COCO AP, AP50..AP95, CrowdHuman MR^-2
FINAL_METRIC = re.compile(r"^bbox/(AP\d*|mMR)$")


@torch.no_grad()
def _inputs_and_outputs(model, data_loader):
    for batch in data_loader:
        yield from zip(batch, model(batch))


def draw_detections(model, data_loader, dataset_dicts, metadata, *, num_images,
                    score_thresh=0.5):
    """Run ``model`` (eval mode) on the first ``num_images`` inputs of ``data_loader`` (a test
    loader over ``dataset_dicts``) and draw each original image twice with detectron2's
    ``Visualizer`` and ``metadata``'s class names: its ground truth (``draw_dataset_dict`` of the
    image's dict in ``dataset_dicts``, matched by ``image_id``: test mappers drop annotations)
    and the predictions scoring at least ``score_thresh`` (``draw_instance_predictions``; the
    model's postprocessing returns boxes in original image coordinates).

    Returns ``(panels, records)``: per image the ``(ground truth, predictions)`` RGB arrays, and
    ``{"image_id", "file_name", "num_gt", "num_predicted"}``.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    dicts = {d["image_id"]: d for d in dataset_dicts}
    panels, records = [], []
    for inputs, outputs in _inputs_and_outputs(model, data_loader):
        dic = dicts[inputs["image_id"]]
        image = read_image(dic["file_name"], format="RGB")
        scale = max(1.0, MIN_PANEL_SIDE / min(image.shape[:2]))
        instances = outputs["instances"].to("cpu")
        instances = instances[instances.scores >= score_thresh]
        # SEGMENTATION mode: both panels colour each class by the dataset's thing_colors, if any
        gt, predicted = (Visualizer(image, metadata, scale=scale,
                                    instance_mode=ColorMode.SEGMENTATION) for _ in range(2))
        panels.append((gt.draw_dataset_dict(dic).get_image(),
                       predicted.draw_instance_predictions(instances).get_image()))
        records.append({"image_id": dic["image_id"], "file_name": dic["file_name"],
                        "num_gt": len(dic.get("annotations", [])),
                        "num_predicted": len(instances)})
        if len(records) == num_images:
            break
    return panels, records


def detection_figure(panels, records, score_thresh, plt):
    """One row per image, ground truth left and predictions right, each titled, at the panels'
    own resolution when saved at ``fig.dpi``."""
    heights = [max(gt.shape[0], pred.shape[0]) / DETECTION_DPI for gt, pred in panels]
    width = max(gt.shape[1] + pred.shape[1] for gt, pred in panels) / DETECTION_DPI
    fig, axes = plt.subplots(
        len(panels), 2, figsize=(width, sum(heights) + TITLE_INCHES * len(panels)),
        dpi=DETECTION_DPI, squeeze=False, gridspec_kw={"height_ratios": heights},
    )
    fig.subplots_adjust(left=0, right=1, bottom=0, wspace=0.02,
                        top=1 - TITLE_INCHES / fig.get_figheight(),
                        hspace=TITLE_INCHES / np.mean(heights))
    for (ax_gt, ax_pred), (gt, pred), record in zip(axes, panels, records):
        name = os.path.basename(record["file_name"])
        ax_gt.imshow(gt)
        ax_gt.set_title(f"{name}: ground truth, {record['num_gt']} boxes", fontsize=9)
        ax_pred.imshow(pred)
        ax_pred.set_title(f"predictions with score >= {score_thresh:g}: "
                          f"{record['num_predicted']} boxes", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    return fig


def training_curves(run_dirs, metrics=None):
    """The curves of each run directory's ``metrics.json``: for each key of ``metrics`` (default:
    ``total_loss``, then every other logged key containing "loss"), the logged values against
    iteration, and the final evaluation's summary metrics (``bbox/AP``, ``bbox/AP50``, ...) when
    logged.

    A run resumed after an interruption logs again the iterations it repeats; the later values
    replace the earlier ones. A directory without ``metrics.json``, a malformed line
    (:func:`d2ext.run_state.read_metrics`), or a requested key no run logs raise an error naming
    it. Returns ``{"runs": [...], "series": {key: {run: {"iteration", "value"}}}, "final": {run:
    {metric: value}}}``.
    """
    records = {}
    for run in run_dirs:
        path = os.path.join(run, "metrics.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{run}: no metrics.json (not a train_net.py OUTPUT_DIR?)")
        records[run] = read_metrics(path)
    logged = {k for rows in records.values() for row in rows for k in row}
    if metrics:
        missing = [k for k in metrics if k not in logged]
        if missing:
            raise ValueError(f"{', '.join(missing)}: logged in no metrics.json of "
                             f"{', '.join(run_dirs)}")
        keys = list(metrics)
    else:
        keys = sorted((k for k in logged if "loss" in k), key=lambda k: (k != "total_loss", k))
        if not keys:
            raise ValueError(f"no loss logged in the metrics.json of {', '.join(run_dirs)}")
    series = {key: {} for key in keys}
    final = {}
    for run, rows in records.items():
        for key in keys:
            values = {row["iteration"]: row[key] for row in rows if key in row}
            if values:
                iterations = sorted(values)
                series[key][run] = {"iteration": iterations,
                                    "value": [values[i] for i in iterations]}
        evaluated = [row for row in rows if any(FINAL_METRIC.match(k) for k in row)]
        if evaluated:
            final[run] = {k: v for k, v in evaluated[-1].items() if FINAL_METRIC.match(k)}
    return {"runs": list(run_dirs), "series": series, "final": final}


def _metric_order(name):
    """bbox/AP, bbox/AP50, ..., bbox/AP95, then the others by name."""
    threshold = re.fullmatch(r"bbox/AP(\d*)", name)
    return (0, int(threshold.group(1) or 0), "") if threshold else (1, 0, name)


def curves_figure(curves, plt):
    """One subplot per curve key, one line per run (the legend names the run directories), and,
    when a run logged its final evaluation, a panel of those metrics as grouped bars; each run
    has one colour throughout."""
    keys, final = list(curves["series"]), curves["final"]
    colors = {run: f"C{i}" for i, run in enumerate(curves["runs"])}
    num_panels = len(keys) + bool(final)
    cols = min(3, num_panels)
    rows = (num_panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[num_panels:]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        for run, line in curves["series"][key].items():
            ax.plot(line["iteration"], line["value"], color=colors[run], lw=1, marker=".", ms=3)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("iteration")
    axes.flat[0].legend(handles=[plt.Line2D([], [], color=c, label=run)
                                 for run, c in colors.items()], fontsize=7)
    if final:
        ax = axes.flat[len(keys)]
        names = sorted({k for metrics in final.values() for k in metrics}, key=_metric_order)
        x = np.arange(len(names))
        width = 0.8 / len(final)
        for j, (run, metrics) in enumerate(final.items()):
            ax.bar(x + width * (j - (len(final) - 1) / 2), [metrics.get(n, np.nan) for n in names],
                   width, color=colors[run])
        ax.set_xticks(x, [n.split("/", 1)[1] for n in names], rotation=90, fontsize=8)
        ax.set_title("final evaluation", fontsize=10)
        ax.set_ylabel("%")
    fig.tight_layout()
    return fig
