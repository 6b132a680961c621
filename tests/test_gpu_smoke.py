"""tools/gpu_smoke.py in its CPU mode (the CI run): one config per method family at a tiny size,
AMP off and on (bfloat16 on CPU), one iteration each; plus its config discovery."""
import os
import re

import pytest

from tests.conftest import load_tool

CONFIGS = ["configs/iou_uniform/faster_rcnn_R_50_FPN_1x.yaml",
           "configs/rga_prm/faster_rcnn_R_50_FPN_1x_rga_prm.yaml",
           "configs/padet/padet_vgg16_384.yaml",
           "configs/iou_balanced/retinanet_R_50_FPN_1x.yaml"]
# narrower networks and fewer RoIs, so that eight CPU iterations fit the test's time
SMALL_MODELS = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
                "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
                "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.RPN.POST_NMS_TOPK_TRAIN",
                "64", "MODEL.IOU_UNIFORM.NUM_PER_INTERVAL", "2", "MODEL.PADET.VGG_WIDTH",
                "0.25", "MODEL.PADET.CHANNELS", "32"]


def test_gpu_smoke_cpu_mode(capsys):
    rows, gen = load_tool("gpu_smoke").main(
        ["--configs", *CONFIGS, "--device", "cpu", "--iters", "1", "--warmup", "0",
         "--batch-size", "2", "--image-size", "64", "96", "--num-boxes", "3", "--gen-gts", "30",
         *SMALL_MODELS])
    out = capsys.readouterr().out
    assert "device cpu, torch " in out and "torch threads" in out and "VmHWM" in out
    table = [line for line in out.splitlines() if line.startswith("| configs/")]
    assert len(table) == len(rows) == 2 * len(CONFIGS)
    assert [(r["config"], r["amp"]) for r in rows] == [
        (c, amp) for c in CONFIGS for amp in ("off", "bfloat16")]
    for r, line in zip(rows, table):
        assert r["finite"] and r["s_per_iter"] > 0 and r["images_per_s"] > 0
        assert r["weights"] == "random" and line.endswith(" |") and "| yes |" in line
        assert r["peak_mib"] is None or r["peak_mib"] > -1024  # RSS may shrink between rows
    assert {r["input"] for r in rows} == {"2x64x96", "2x160x160"}  # PADet: smallest square
    assert gen["passed"] and gen["device"] == "cpu" and gen["num_gts"] == 30
    assert re.search(r"\| CPU branch .* \| yes \|$", out, re.M)
    assert "all losses finite; generator exact" in out


def test_gpu_smoke_config_discovery():
    tool = load_tool("gpu_smoke")
    configs = tool.paper_configs()
    assert len(configs) == len(set(configs)) > 20
    assert not any(os.path.basename(c).startswith("Base-") for c in configs)
    assert {c.split("/")[1] for c in configs} == set(tool.PAPER_FOLDERS)
    assert tool.paper_configs(["configs/padet/padet_vgg16_*.yaml"]) == [
        "configs/padet/padet_vgg16_384.yaml", "configs/padet/padet_vgg16_384_baseline.yaml",
        "configs/padet/padet_vgg16_384_voc0712.yaml", "configs/padet/padet_vgg16_512.yaml",
        "configs/padet/padet_vgg16_512_voc0712.yaml"]
    with pytest.raises(ValueError, match="matches no file"):
        tool.paper_configs(["configs/nope/*.yaml"])
