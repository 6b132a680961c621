"""The install: detectron2 and the project's packages import, torchvision's ops run on CPU,
a provisioned detectron2's ``_C`` placeholder names the op it cannot run, and a user's own
detectron2 build is kept."""
import importlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import torchvision.ops as ops

import detectron2


def test_detectron2_and_project_packages_import():
    for name in ["d2ext", "iou_uniform", "rga_prm", "padet", "projects.iou_balanced", "train_net"]:
        importlib.import_module(name)
    assert importlib.metadata.version("detectron2").startswith("0.6")
    from detectron2 import model_zoo

    assert os.path.isfile(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))


def test_torchvision_ops_run_on_cpu():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    keep = ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]

    feat = torch.arange(16.0).reshape(1, 1, 4, 4)
    pooled = ops.roi_align(feat, torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]]), (2, 2), aligned=True)
    assert torch.allclose(pooled, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))

    x, weight = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    zero_offset = torch.zeros(1, 2 * 9, 5, 5)
    out = ops.deform_conv2d(x, zero_offset, weight, padding=1)
    assert torch.allclose(out, torch.nn.functional.conv2d(x, weight, padding=1), atol=1e-5)


def test_compiled_op_placeholder_raises_named_error():
    from detectron2 import _C

    if getattr(_C, "HAS_COMPILED_OPS", True):
        pytest.skip("this environment has the user's own detectron2 build with compiled ops")
    with pytest.raises(RuntimeError, match=r"deform_conv_forward.*no compiled ops"):
        _C.deform_conv_forward
    from detectron2.structures import RotatedBoxes, pairwise_iou_rotated

    boxes = RotatedBoxes(torch.tensor([[5.0, 5.0, 4.0, 2.0, 30.0]]))
    with pytest.raises(RuntimeError, match=r"box_iou_rotated.*no compiled ops"):
        pairwise_iou_rotated(boxes, boxes)
    # the environment report (used by default_setup) still works
    from detectron2.utils.collect_env import collect_env_info

    assert "no compiled ops" in collect_env_info()
    assert detectron2.__version__ == "0.6"


def test_install_step_pins_torch_unless_keeping_the_users_detectron2():
    from tests.conftest import REPO

    path = os.path.join(REPO, "tools", "install.py")
    spec = importlib.util.spec_from_file_location("install", path)
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    pinned = install._requirements(keep_torch=False)
    assert {"torch==2.14.1", "torchvision==0.29.1", "numpy>=1.23,<1.24"} <= set(pinned)
    kept = install._requirements(keep_torch=True)
    assert set(pinned) - set(kept) == {"torch==2.14.1", "torchvision==0.29.1"}


_FINGERPRINT = """
import hashlib, importlib.metadata as md, json, os, torch, detectron2._C as C
print(json.dumps({
    "detectron2": [md.version("detectron2"), os.path.dirname(C.__file__)],
    "_C": [C.__file__, hashlib.sha256(open(C.__file__, "rb").read()).hexdigest()],
    "torch": [torch.__version__, torch.__file__, os.stat(torch.__file__).st_mtime_ns,
              md.version("torchvision")],
}))
"""


def _environment_fingerprint():
    out = subprocess.run([sys.executable, "-c", _FINGERPRINT], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def test_install_keeps_the_users_compiled_detectron2_and_its_torch():
    """`make install` over a user's own detectron2 build (CI's `make test-upstream` leg) changes
    neither that build (its compiled ``_C``) nor the torch it is compiled against."""
    from detectron2 import _C

    if getattr(_C, "HAS_COMPILED_OPS", True) is False:
        pytest.skip("detectron2 here is the provisioned 0.6 without compiled ops; this runs in "
                    "the upstream leg (make test-upstream), on a user's own build")
    from tests.conftest import REPO

    before = _environment_fingerprint()
    subprocess.run([sys.executable, os.path.join(REPO, "tools", "install.py")], check=True,
                   capture_output=True)
    assert _environment_fingerprint() == before
