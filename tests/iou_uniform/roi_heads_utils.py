"""Hand-built inputs for the IoU-uniform ROI heads tests: small FPN features, proposals, GTs."""
import torch

from train_net import add_all_configs
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import build_roi_heads
from detectron2.structures import Boxes, Instances

IMAGE_SIZE = (96, 128)  # (H, W)
INPUT_SHAPE = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}


def small_cfg(name="IoUUniformROIHeads", **iou_uniform):
    cfg = add_all_configs(get_cfg())
    cfg.MODEL.ROI_HEADS.NAME = name
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 32
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    for k, v in iou_uniform.items():
        cfg.MODEL.IOU_UNIFORM[k] = v
    return cfg


def build_heads(name="IoUUniformROIHeads", **iou_uniform):
    torch.manual_seed(0)
    return build_roi_heads(small_cfg(name, **iou_uniform), INPUT_SHAPE)


def features(num_images=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = IMAGE_SIZE
    return {
        "p2": torch.rand(num_images, 8, h // 4, w // 4, generator=g),
        "p3": torch.rand(num_images, 8, h // 8, w // 8, generator=g),
    }


def targets(gt_counts=(3, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    h, w = IMAGE_SIZE
    for n in gt_counts:
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w - 40.0, h - 40.0])
        wh = 12 + torch.rand(n, 2, generator=g) * 26
        inst = Instances(IMAGE_SIZE)
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        inst.gt_classes = torch.randint(3, (n,), generator=g)
        out.append(inst)
    return out


def proposals(gts, num=60, seed=0):
    """Random proposals plus jittered copies of the GTs (so that some are positive)."""
    g = torch.Generator().manual_seed(seed)
    h, w = IMAGE_SIZE
    out = []
    for t in gts:
        xy = torch.rand(num, 2, generator=g) * torch.tensor([w - 30.0, h - 30.0])
        boxes = torch.cat([xy, xy + 8 + torch.rand(num, 2, generator=g) * 22], 1)
        near = t.gt_boxes.tensor.repeat(4, 1) + torch.randn(4 * len(t), 4, generator=g) * 2
        inst = Instances(IMAGE_SIZE)
        inst.proposal_boxes = Boxes(torch.cat([boxes, near]))
        inst.proposal_boxes.clip(IMAGE_SIZE)
        inst.objectness_logits = torch.randn(len(inst.proposal_boxes), generator=g)
        out.append(inst)
    return out


class Recorder:
    """Wraps a bound method and records its arguments and results."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args):
        result = self.fn(*args)
        self.calls.append((args, result))
        return result
