"""tools/benchmark_*.py and their shared timing module d2ext.benchmark, at the smallest sizes."""
import re

import pytest
import torch

import rga_prm
from d2ext.benchmark import (
    BenchmarkTrainer, Row, build_benchmark_model, count_macs, markdown_table, shapes_batches,
    time_interleaved,
)
from tests.conftest import TINY_TRAIN, load_tool
from train_net import load_config

# one tiny training batch of shapes_tiny_train at 64-96 px, one timed iteration, no warm-up
SMALL = ["--iters", "1", "--warmup", "0", "--batch-size", "1", "--device", "cpu"]
TINY_SHAPES = ["DATASETS.TRAIN", f"('{TINY_TRAIN}',)", "INPUT.MIN_SIZE_TRAIN", "(64,)",
               "INPUT.MAX_SIZE_TRAIN", "96"]


def _table_rows(text):
    """name -> median ms of every markdown table row."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5 and re.fullmatch(r"[\d.]+", cells[1]):
            rows[cells[0]] = float(cells[1])
    return rows


def _check(out, results, names):
    assert "torch threads" in out and "device cpu" in out
    rows = _table_rows(out)
    assert list(rows) == names
    assert all(ms > 0 for ms in rows.values())
    assert [r["name"] for r in results] == names
    assert all(r["seconds"] > 0 for r in results)
    for r in results:  # a target is judged exactly when there is one
        assert (r["met"] is None) == (r["target"] is None)


def test_benchmark_iou_uniform(tiny_shapes, capsys):
    results = load_tool("benchmark_iou_uniform").main(SMALL + TINY_SHAPES)
    _check(capsys.readouterr().out, results, [
        "sample generation (100 GTs, 800x1333)", "train step: Faster R-CNN (baseline)",
        "train step: IoU-uniform", "inference: Faster R-CNN (baseline)",
        "inference: IoU-uniform, EFO", "inference: IoU-uniform, no EFO"])


def test_benchmark_iou_uniform_crowded_image(capsys):
    """``--crowded-gts``: one config's train step on an image with that many GTs, and the RSS."""
    seconds, peak_mib = load_tool("benchmark_iou_uniform").main(
        SMALL + ["--crowded-gts", "50", "MODEL.IOU_UNIFORM.MAX_GTS_PER_IMAGE", "20"])
    out = capsys.readouterr().out
    assert "50 GTs on one 128x224 image" in out and "MAX_GTS_PER_IMAGE 20" in out
    assert seconds > 0 and peak_mib > 100


def test_benchmark_model_loads_trained_weights(tmp_path):
    """``weights`` loads a checkpoint over the seeded initialisation; a missing file is named."""
    cfg_file = "configs/shapes/faster_rcnn_R_18_FPN.yaml"
    _, model = build_benchmark_model(load_config, cfg_file, seed=1)
    path = str(tmp_path / "trained.pth")
    torch.save({"model": model.state_dict()}, path)
    _, loaded = build_benchmark_model(load_config, cfg_file, seed=0, weights=path)
    _, fresh = build_benchmark_model(load_config, cfg_file, seed=0)
    key = "roi_heads.box_head.fc1.weight"
    assert torch.equal(loaded.state_dict()[key], model.state_dict()[key])
    assert not torch.equal(fresh.state_dict()[key], model.state_dict()[key])
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_benchmark_model(load_config, cfg_file, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(SystemExit):  # one of the two trained checkpoints only
        load_tool("benchmark_iou_uniform").main(SMALL + ["--baseline-weights", path])


def test_benchmark_rga_prm(tiny_shapes, capsys):
    results = load_tool("benchmark_rga_prm").main(SMALL + TINY_SHAPES)
    _check(capsys.readouterr().out, results, [
        "train step: Faster R-CNN (baseline)", "train step: RGA", "train step: PRM + RGA",
        "train step: PRM, no RGA", "inference: Faster R-CNN (baseline)",
        "inference: PRM (ensemble)"])


def test_benchmark_padet(capsys):
    results = load_tool("benchmark_padet").main(
        SMALL + ["--image-size", "64", "96", "MODEL.PADET.INPUT_SIZE", "160"])
    out = capsys.readouterr().out
    _check(out, results, ["RetinaNet R50-FPN 64x96 (baseline)", "Faster R-CNN R50-FPN 64x96",
                          "PADet VGG-16 160x160", "RetinaNet R101-FPN 64x96 (paper's comparison)"])
    assert "faster than RetinaNet R50-FPN" in out
    macs_line = out.split("GMACs per image: ")[1].splitlines()[0]
    macs = dict(re.findall(r"(\w+) ([\d.]+)(?:,|;)", macs_line))
    assert set(macs) == {"retinanet", "faster_rcnn", "padet", "retinanet_r101"}
    assert float(macs["retinanet_r101"]) > float(macs["retinanet"]) > 0


def test_count_macs_convolutions_linears_and_extra_layers():
    """3x3 conv 2->4 on 5x5 (padding 1): 4*25 outputs x 2*9 = 1800; linear 100->3: 300;
    an extra module type counted by its own function."""
    class Extra(torch.nn.Module):
        def forward(self, x):
            return x

    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Flatten(),
                                torch.nn.Linear(100, 3), Extra())
    x = torch.zeros(1, 2, 5, 5)
    assert count_macs(model, x) == 1800 + 300
    assert count_macs(model, x, {Extra: lambda m, out: 7 * out.numel()}) == 1800 + 300 + 21
    assert model.training  # the mode is restored


def test_benchmark_iou_balanced(tiny_shapes, capsys):
    # batch 2: the shapes RetinaNet's BN head needs > 1 value per channel on a 1x1 P7
    tool = load_tool("benchmark_iou_balanced")
    rows = tool.main(SMALL[:-4] + ["--batch-size", "2"] + TINY_SHAPES)
    out = capsys.readouterr().out
    assert [r[0] for r in rows] == ["RetinaNet R18-FPN", "Faster R-CNN R18-FPN"]
    assert all(t > 0 for r in rows for t in r[1:])
    assert "RetinaNet R18-FPN" in out and "torch threads" in out


def test_trainer_runs_rga_hook_and_scales_rcnn_gradients(tiny_shapes):
    """The RGA train step goes through GradientAnnealingHook: R-CNN gradients x lambda_0."""
    opts = TINY_SHAPES + ["SOLVER.CLIP_GRADIENTS.ENABLED", "False"]  # clipping rescales grads
    cfg, base = build_benchmark_model(load_config, "configs/shapes/faster_rcnn_R_18_FPN.yaml",
                                      opts)
    _, rga = build_benchmark_model(load_config, "configs/shapes/rga_R_18_FPN.yaml", opts,
                                   init_from=base)
    batches = shapes_batches(cfg, 1, 1, "cpu")
    hook = rga_prm.GradientAnnealingHook(lambda0=7.0, anneal=False)
    grads = {}
    for name, model, hooks in (("base", base, []), ("rga", rga, [hook])):
        trainer = BenchmarkTrainer(cfg, model, batches, hooks=hooks, lr=0.0)
        torch.manual_seed(1)  # the same RoI sampling in both models
        trainer.step()
        grads[name] = model.roi_heads.box_predictor.cls_score.weight.grad.clone()
    assert hook.trainer.storage.latest()["rga/lambda"][0] == 7.0
    torch.testing.assert_close(grads["rga"], 7.0 * grads["base"], rtol=1e-4, atol=1e-6)


def test_time_interleaved_rotates_order_and_drops_warmup():
    calls = []
    times = time_interleaved({"a": lambda i: calls.append(("a", i)),
                              "b": lambda i: calls.append(("b", i))}, iters=2, warmup=1,
                             device="cpu")
    assert calls == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2}
    with pytest.raises(ValueError, match="iters"):
        time_interleaved({"a": lambda i: None}, iters=0, warmup=0, device="cpu")


def test_markdown_table_ratios_targets_and_per_image():
    rows = [Row("base", "b", per=2), Row("fast", "f", "b", 0.5), Row("abs", "x", target=5.0)]
    text, res = markdown_table(rows, {"b": [0.4, 0.2, 0.3], "f": [0.1], "x": [0.006]})
    assert res[0]["seconds"] == pytest.approx(0.15)  # median 0.3 / 2 images
    assert res[1]["ratio"] == pytest.approx(0.1 / 0.15) and res[1]["met"] is False
    assert res[2]["ratio"] is None and res[2]["met"] is False  # 6 ms > 5 ms
    assert "| abs | 6.00 | — | ≤ 5.00 ms | no |" in text
