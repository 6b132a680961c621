"""torchvision's ImageNet VGG-16 as PADet encoder weights (``tools/convert_vgg16_weights.py``
writes them as a checkpoint for ``MODEL.WEIGHTS``).

``features.*`` keep their names (the encoder's convs are torchvision's own layers); fc6 and fc7
are turned into SSD's "reduced fc" convs by decimation (SSD): fc6 (4096 x 512*7*7) -> every 4th
output, every 3rd spatial tap -> 1024 x 512 x 3 x 3 (used with dilation 6); fc7 (4096 x 4096) ->
every 4th output and input -> 1024 x 1024 x 1 x 1. Valid for ``VGG_WIDTH`` 1.0, ``VGG_NORM`` "".
"""
__all__ = ["convert_torchvision_vgg16"]

PREFIX = "backbone.encoder."


def convert_torchvision_vgg16(state_dict, prefix=PREFIX):
    """torchvision ``vgg16().state_dict()`` -> PADet VGG-16 encoder parameters under ``prefix``."""
    missing = {"classifier.0.weight", "classifier.3.weight"} - set(state_dict)
    if missing or not any(k.startswith("features.") for k in state_dict):
        raise KeyError("not a torchvision vgg16 state dict: missing "
                       f"{sorted(missing) or 'features.*'}")
    out = {prefix + k: v for k, v in state_dict.items() if k.startswith("features.")}
    fc6_w = state_dict["classifier.0.weight"].view(4096, 512, 7, 7)
    out[prefix + "fc6.weight"] = fc6_w[::4, :, ::3, ::3].contiguous()
    out[prefix + "fc6.bias"] = state_dict["classifier.0.bias"][::4].contiguous()
    fc7_w = state_dict["classifier.3.weight"].view(4096, 4096, 1, 1)
    out[prefix + "fc7.weight"] = fc7_w[::4, ::4].contiguous()
    out[prefix + "fc7.bias"] = state_dict["classifier.3.bias"][::4].contiguous()
    return out
