"""A real 2-process DistributedDataParallel run per package (gloo, CPU): DDP with
``find_unused_parameters=False``, as detectron2's ``create_ddp_model`` wraps the model, fails
at the second iteration ("Expected to have finished reduction in the prior iteration") when a
parameter gets no gradient. detectron2 0.6's ``launch`` needs CUDA for several processes, so the
processes are spawned here with torch.multiprocessing."""
import datetime
import os
import socket
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from tests.conftest import config_path

PADET = config_path("shapes", "padet_vgg16_0.25x_256_flip_2600it.yaml")
RUNS = [  # one per package; PADet: Table 2's encoder-decoder baseline and the full model
    (config_path("shapes", "iou_uniform_R_18_FPN.yaml"), ()),
    (config_path("shapes", "rga_prm_R_18_FPN.yaml"), ()),  # PRM towers; RGA is a hook
    (PADET, ("MODEL.PADET.APM_CLS", "False", "MODEL.PADET.APM_REG", "False",
             "MODEL.PADET.FAM_MODE", "none")),
    (PADET, ()),
    (config_path("shapes", "iou_balanced_faster_rcnn_R_18_FPN.yaml"), ()),
]
ITERATIONS = 3


def _train_ddp(config, opts, rank):
    from detectron2.utils.events import EventStorage
    from tests.model_checks import build_model_from_config, make_batch, num_classes_of

    cfg, model = build_model_from_config(config, *opts)  # seeded: same weights on both ranks
    model = DistributedDataParallel(model, find_unused_parameters=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    with EventStorage():
        for it in range(ITERATIONS):  # small odd sizes, different data on each rank
            batch = make_batch((2, 1), num_classes_of(cfg), sizes=((96, 128), (96, 127)),
                               seed=100 * rank + it)
            losses = model(batch)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()


def _worker(rank, port, runs, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=120))
    for config, opts in runs:
        try:
            _train_ddp(config, opts, rank)
            results.put((rank, config, opts, None))
        except Exception:  # reported by the parent; both ranks fail alike, so go on
            results.put((rank, config, opts, traceback.format_exc()))
    dist.destroy_process_group()


def run_ddp(runs, timeout=600):
    """Train each (config, opts) of ``runs`` for ``ITERATIONS`` iterations under DDP in two
    processes; returns {(config, opts): [error of rank 0, error of rank 1]} (None = passed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(rank, port, runs, results)) for rank in range(2)]
    for p in procs:
        p.start()
    errors = {(c, o): [None, None] for c, o in runs}
    try:
        for _ in range(2 * len(runs)):
            rank, config, opts, error = results.get(timeout=timeout)
            errors[(config, tuple(opts))][rank] = error
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    return errors


def test_every_package_trains_under_ddp_with_two_processes():
    errors = run_ddp(RUNS)
    failed = {f"{c} {' '.join(o)}": e for (c, o), e in errors.items() if any(e)}
    assert not failed, failed
