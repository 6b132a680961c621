"""``SOLVER.AMP.ENABLED`` (docs/training.md#amp): a training step of every package's shapes
config under autocast (CPU, bfloat16) gives finite losses, and the IoU-uniform generated
samples' IoU targets are the float32 ones."""
import pytest
import torch

from detectron2.structures import Boxes
from tests.conftest import config_path
from tests.model_checks import build_model_from_config, make_batch, num_classes_of, train_step

CONFIGS = ["iou_uniform_rga_prm_R_18_FPN.yaml", "padet_vgg16_0.25x_256_flip_2600it.yaml",
           "iou_balanced_faster_rcnn_R_18_FPN.yaml", "iou_balanced_retinanet_R_18_FPN.yaml"]
SIZES = ((96, 128), (96, 127))


def _autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("config", CONFIGS)
def test_training_step_under_autocast_has_finite_losses(config):
    cfg, model = build_model_from_config(config_path("shapes", config))
    batch = make_batch((3, 2), num_classes_of(cfg), sizes=SIZES)
    with _autocast():
        losses = train_step(model, batch)
    assert losses and all(torch.isfinite(v).all() for v in losses.values()), losses
    if "padet" in config:  # soft-NMS and decoding in float32
        model.eval()
        with _autocast(), torch.no_grad():
            out = model([{"image": d["image"]} for d in batch])
        assert out[0]["instances"].scores.dtype == torch.float32


def test_generated_sample_ious_are_exact_under_autocast():
    _, model = build_model_from_config(config_path("shapes", "iou_uniform_R_18_FPN.yaml"))
    gt = Boxes(torch.tensor([[10.0, 12.0, 60.0, 90.0], [40.5, 30.25, 120.0, 70.0]]))
    torch.manual_seed(3)
    reference = model.roi_heads.sample_generator(gt, (128, 160))
    torch.manual_seed(3)
    with _autocast():
        samples = model.roi_heads.sample_generator(gt, (128, 160))
    assert len(samples) > 0 and samples.ious.dtype == torch.float32
    assert torch.equal(samples.boxes, reference.boxes)
    assert torch.equal(samples.ious, reference.ious)
