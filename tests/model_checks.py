"""Shared end-to-end model checks: build a shipped config on CPU, then a training forward +
backward on odd-sized random images (every trainable parameter gets a gradient), an empty-GT
image, a half-empty batch and an eval forward.
Every method's tests reuse these through ``tests/test_configs.py``."""
import torch

from d2ext.benchmark import num_classes_of, random_training_batch
from train_net import load_config
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

ODD_SIZES = ((200, 250), (200, 249))


def build_model_from_config(config_file, *opts):
    """``get_cfg`` + every method node + the YAML + opts, ``MODEL.DEVICE cpu``; seeded build."""
    cfg = load_config(config_file, ["MODEL.DEVICE", "cpu", *opts])
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def make_batch(num_boxes_per_image, num_classes, sizes=ODD_SIZES, seed=0):
    """detectron2 input dicts (uint8 CHW images + ``instances``) of the given odd sizes."""
    return random_training_batch(sizes, num_boxes_per_image, num_classes,
                                 torch.Generator().manual_seed(seed))


def train_step(model, batch):
    """One training forward + backward inside an ``EventStorage``; returns the loss dict."""
    model.train()
    model.zero_grad()
    with EventStorage():
        losses = model(batch)
        sum(losses.values()).backward()
    return losses


def assert_every_parameter_has_a_gradient(model, what=""):
    """After a backward: every parameter with ``requires_grad`` has a gradient (zero is fine:
    it is connected to the loss). A parameter without one makes DistributedDataParallel
    (``find_unused_parameters=False``, detectron2's ``create_ddp_model``) fail."""
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{what}: parameters without a gradient: {missing}"


def assert_trains_and_infers(cfg, model):
    """Finite losses and gradients on odd sizes, an empty-GT image, a half-empty batch; eval.
    Returns the names of the losses of the first (normal) batch."""
    n = num_classes_of(cfg)
    names = None
    for boxes in ((3, 2), (0, 0), (4, 0)):  # normal, every image empty, half-empty batch
        losses = train_step(model, make_batch(boxes, n))
        assert losses, "training forward returned no losses"
        names = names or sorted(losses)
        for k, v in losses.items():
            assert torch.isfinite(v).all(), f"{k} is not finite with GT counts {boxes}"
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"no gradient, {boxes}"
        assert all(g is None or torch.isfinite(g).all() for g in grads), f"bad grad, {boxes}"
        if boxes == (3, 2):
            assert_every_parameter_has_a_gradient(model, f"GT counts {boxes}")
    model.eval()
    with torch.no_grad():
        outputs = model([{k: v for k, v in d.items() if k != "instances"}
                         for d in make_batch((0, 0), n)])
    assert len(outputs) == 2
    for out, (h, w) in zip(outputs, ODD_SIZES):
        inst = out["instances"]
        assert inst.image_size == (h, w)
        assert {"pred_boxes", "scores", "pred_classes"} <= set(inst.get_fields())
    return names
