"""Encoder-decoder backbones (paper §3; docs/padet.md) and VGG-16 weight names (torchvision)."""
import pytest
import torch
import torchvision

from train_net import load_config
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from padet.vgg_weights import convert_torchvision_vgg16
from tests.conftest import config_path, load_tool

MAPS = {384: [48, 24, 12, 6, 3, 1], 512: [64, 32, 16, 8, 4, 1]}
CONFIGS = {"vgg16": "padet_vgg16_384.yaml", "R_101": "padet_R_101_384.yaml"}


@pytest.mark.parametrize("encoder", sorted(CONFIGS))
@pytest.mark.parametrize("size", [384, 512])
def test_decoded_levels_shapes_and_strides(encoder, size):
    """Shapes only: the backbone runs on the meta device (no arithmetic)."""
    cfg = load_config(config_path("padet", CONFIGS[encoder]), ["MODEL.DEVICE", "cpu"])
    backbone = build_backbone(cfg, ShapeSpec(channels=3)).to("meta").eval()
    shapes = backbone.output_shape()
    assert list(shapes) == ["d1", "d2", "d3", "d4", "d5", "d6"]
    assert [s.stride for s in shapes.values()] == [8, 16, 32, 64, 128, 256]
    assert backbone.encoder.strides == [8, 16, 32, 64, 128]
    assert all(s.channels == 256 for s in shapes.values())
    with torch.no_grad():
        out = backbone(torch.empty(2, 3, size, size, device="meta"))
    for name, m in zip(shapes, MAPS[size]):
        assert tuple(out[name].shape) == (2, 256, m, m), name


def test_resnet_encoder_uses_detectron2_resnet_names():
    cfg = load_config(config_path("padet", "padet_R_101_384.yaml"), ["MODEL.DEVICE", "cpu"])
    names = set(build_backbone(cfg).state_dict())
    assert "encoder.bottom_up.res5.2.conv3.weight" in names  # res4 has 23 blocks
    assert "encoder.bottom_up.res4.22.conv1.weight" in names


def test_vgg_encoder_layout():
    cfg = load_config(config_path("padet", "padet_vgg16_384.yaml"), ["MODEL.DEVICE", "cpu"])
    enc = build_backbone(cfg).encoder
    pools = [m for m in enc.features if isinstance(m, torch.nn.MaxPool2d)]
    assert [p.ceil_mode for p in pools[:3]] == [False, False, True]  # pool3 ceil_mode
    assert (pools[4].kernel_size, pools[4].stride, pools[4].padding) == (3, 1, 1)  # pool5
    assert enc.fc6.dilation == (6, 6) and enc.fc6.padding == (6, 6)
    assert enc.fc6.out_channels == 1024 and enc.fc7.kernel_size == (1, 1)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.features)  # no BN in VGG
    assert enc.out_channels == [512, 1024, 512, 256, 256]


def test_torchvision_vgg16_state_dict_loads_into_the_encoder(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.vgg16(weights=None).state_dict()
    converted = convert_torchvision_vgg16(tv)
    cfg = load_config(config_path("padet", "padet_vgg16_384.yaml"), ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    result = model.load_state_dict(converted, strict=False)
    assert not result.unexpected_keys
    assert not [k for k in result.missing_keys if "encoder.features" in k or ".fc" in k]
    tv_features = [k for k in tv if k.startswith("features.")]
    assert len(tv_features) == 26  # 13 convs, weight + bias, every one loaded by name
    enc = model.backbone.encoder
    for k in tv_features:
        assert torch.equal(enc.state_dict()[k], tv[k])
    # fc6/fc7 decimation (SSD): every 4th filter, every 3rd spatial tap of fc6's 7x7
    fc6 = tv["classifier.0.weight"].view(4096, 512, 7, 7)
    assert torch.equal(enc.fc6.weight[5, 7], fc6[20, 7, ::3, ::3])
    assert torch.equal(enc.fc7.weight[3, 9, 0, 0], tv["classifier.3.weight"][12, 36])
    with pytest.raises(KeyError, match="torchvision vgg16"):
        convert_torchvision_vgg16({"foo": torch.zeros(1)})
    # the program writes the same parameters as a checkpoint for MODEL.WEIGHTS
    torch.save(tv, tmp_path / "vgg16.pth")
    convert = load_tool("convert_vgg16_weights").main
    convert([str(tmp_path / "vgg16.pth"), str(tmp_path / "padet.pth")])
    written = torch.load(tmp_path / "padet.pth", weights_only=True)["model"]
    assert written.keys() == converted.keys()
    assert all(torch.equal(written[k], converted[k]) for k in converted)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        convert([str(tmp_path / "missing.pth"), str(tmp_path / "out.pth")])


def test_narrow_vgg_and_any_input_size():
    cfg = load_config(config_path("shapes", "padet_vgg16_0.25x_256_flip_2600it.yaml"), ["MODEL.DEVICE", "cpu"])
    backbone = build_backbone(cfg).eval()
    assert backbone.encoder.out_channels == [128, 256, 128, 64, 64]  # VGG_WIDTH 0.25
    with torch.no_grad():
        out = backbone(torch.zeros(1, 3, 224, 256))  # 200x250 padded to 32
    assert [tuple(v.shape[-2:]) for v in out.values()] == [
        (28, 32), (14, 16), (7, 8), (4, 4), (2, 2), (1, 1)]
