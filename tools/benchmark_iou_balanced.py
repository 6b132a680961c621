#!/usr/bin/env python
"""Train-step and inference time of the IoU-balanced detectors vs their baselines, side by side.

    python tools/benchmark_iou_balanced.py [--iters 20] [--batch-size 4] [--device cpu]

Each pair (baseline config, IoU-balanced config) is built with identical weights and timed on
the same shapes_train batches; the steps of all models are interleaved round-robin so that
background load affects them alike. A train step is forward + backward + SGD step; inference
is an eval forward. Prints a table of median times and the balanced / baseline ratios
(target <= 1.03 for training; inference is the same code, so ~1.00).
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import d2ext  # noqa: E402,F401  (registers the shapes dataset)
import projects.iou_balanced  # noqa: E402,F401  (registration)
from d2ext import load_config  # noqa: E402
from detectron2.data import DatasetCatalog, DatasetMapper  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = [
    ("RetinaNet R18-FPN", "configs/shapes/retinanet_R_18_FPN.yaml",
     "configs/shapes/iou_balanced_retinanet_R_18_FPN.yaml"),
    ("Faster R-CNN R18-FPN", "configs/shapes/faster_rcnn_R_18_FPN.yaml",
     "configs/shapes/iou_balanced_faster_rcnn_R_18_FPN.yaml"),
]


def _model(config, device, state=None):
    cfg = load_config(os.path.join(REPO, config), ["MODEL.DEVICE", device])
    torch.manual_seed(0)
    model = build_model(cfg)
    if state is not None:
        model.load_state_dict(state, strict=False)  # the balanced model's extra w_loc buffers
    return cfg, model


def _batches(cfg, num, batch_size):
    mapper = DatasetMapper(cfg, is_train=True)
    records = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])
    data = [mapper(dict(r)) for r in records[: num * batch_size]]
    return [data[i * batch_size:(i + 1) * batch_size] for i in range(num)]


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _train_step(model, optimizer, batch, device):
    _sync(device)
    start = time.perf_counter()
    losses = model(batch)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    _sync(device)
    return time.perf_counter() - start


@torch.no_grad()
def _infer_step(model, batch, device):
    inputs = [{k: v for k, v in d.items() if k != "instances"} for d in batch]
    _sync(device)
    start = time.perf_counter()
    model(inputs)
    _sync(device)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=20, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    models = {}  # (pair, kind) -> (model, optimizer)
    batches = None
    for name, base_cfg, bal_cfg in PAIRS:
        cfg, baseline = _model(base_cfg, args.device)
        _, balanced = _model(bal_cfg, args.device, baseline.state_dict())
        for kind, model in (("baseline", baseline), ("balanced", balanced)):
            opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
            models[(name, kind)] = (model, opt)
        batches = batches or _batches(cfg, args.warmup + args.iters, args.batch_size)
    batches = [[{k: (v.to(args.device) if torch.is_tensor(v) else v) for k, v in d.items()}
                for d in b] for b in batches]

    train = {k: [] for k in models}
    infer = {k: [] for k in models}
    with EventStorage():
        for i, batch in enumerate(batches):
            for key, (model, opt) in models.items():  # interleaved round-robin
                model.train()
                t = _train_step(model, opt, batch, args.device)
                model.eval()
                s = _infer_step(model, batch, args.device)
                if i >= args.warmup:
                    train[key].append(t)
                    infer[key].append(s)

    print(f"device {args.device}, batch {args.batch_size} shapes_train images, "
          f"{args.iters} timed steps per model (median), threads {torch.get_num_threads()}")
    header = f"{'detector':<22}{'train base':>12}{'train bal':>12}{'ratio':>8}" \
             f"{'infer base':>12}{'infer bal':>12}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    rows = []
    for name, _, _ in PAIRS:
        tb, tl = (statistics.median(train[(name, k)]) for k in ("baseline", "balanced"))
        ib, il = (statistics.median(infer[(name, k)]) for k in ("baseline", "balanced"))
        rows.append((name, tb, tl, ib, il))
        print(f"{name:<22}{tb * 1e3:>10.1f}ms{tl * 1e3:>10.1f}ms{tl / tb:>8.3f}"
              f"{ib * 1e3:>10.1f}ms{il * 1e3:>10.1f}ms{il / ib:>8.3f}")
    return rows


if __name__ == "__main__":
    main()
