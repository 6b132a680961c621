"""RGA under DistributedDataParallel (2 CPU processes, gloo): the reduced R-CNN gradients are
lambda times the reduced unscaled ones; the other gradients are unchanged."""
import os
import socket
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rga_prm.gradient_annealing import GradientAnnealingHook, rga_parameters


class _TwoStage(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 8)
        self.roi_heads = nn.Module()
        self.roi_heads.box_head = nn.Linear(8, 8)
        self.roi_heads.box_predictor = nn.Linear(8, 3)

    def forward(self, x):
        return self.roi_heads.box_predictor(torch.relu(self.roi_heads.box_head(self.backbone(x))))


def _grads(model, x, hook=None):
    model.zero_grad()
    if hook is not None:
        hook.trainer = SimpleNamespace(model=model, iter=3, max_iter=6)
        hook.before_train()
        hook.before_step()
    model(x).pow(2).sum().backward()
    if hook is not None:
        hook.after_train()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _worker(rank, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)  # same initial weights on both ranks
    model = DistributedDataParallel(_TwoStage())
    assert len(rga_parameters(model)) == 4  # unwraps DDP: box_head + box_predictor
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(rank))  # per-rank data
    from detectron2.utils.events import EventStorage

    with EventStorage():
        reference = _grads(model, x)
        scaled = _grads(model, x, GradientAnnealingHook(lambda0=7.0))
    if rank == 0:
        # plain lists: a tensor would travel through shared memory that disappears with this
        # process, racing the parent's unpickling (ConnectionResetError)
        results.put({n: (reference[n].tolist(), scaled[n].tolist()) for n in reference})
    dist.destroy_process_group()


def test_rga_with_ddp_two_processes():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(rank, port, results)) for rank in range(2)]
    for p in procs:
        p.start()
    grads = results.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    lam = 7.0 - 6.0 * 3 / 6
    for name, (reference, scaled) in grads.items():
        reference, scaled = torch.tensor(reference), torch.tensor(scaled)
        if name.startswith("module.roi_heads."):
            torch.testing.assert_close(scaled, lam * reference, rtol=1e-6, atol=1e-7)
        else:
            torch.testing.assert_close(scaled, reference, rtol=0, atol=0)
