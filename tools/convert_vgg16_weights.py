#!/usr/bin/env python
"""Convert torchvision's ImageNet VGG-16 into a PADet checkpoint for ``MODEL.WEIGHTS``.

    python tools/convert_vgg16_weights.py vgg16-397923af.pth vgg16_reducedfc_padet.pth

fc6 and fc7 become SSD's "reduced fc" convs by decimation (padet.vgg_weights); valid for
``MODEL.PADET.VGG_WIDTH`` 1.0 and ``VGG_NORM`` "".
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2ext.checkpoint import load_torch_weights  # noqa: E402
from padet.vgg_weights import convert_torchvision_vgg16  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("torchvision_file", help="torchvision vgg16 ImageNet .pth (state dict)")
    parser.add_argument("output", help="PADet checkpoint to write (.pth, for MODEL.WEIGHTS)")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.torchvision_file):
        raise FileNotFoundError(f"torchvision VGG-16 file not found: {args.torchvision_file}")
    state_dict = load_torch_weights(args.torchvision_file)
    torch.save({"model": convert_torchvision_vgg16(state_dict), "__author__": "torchvision"},
               args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
