"""tools/diagnose_iou_uniform.py: each diagnostic runs on a tiny (untrained) model and writes
PNG + JSON."""
import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling.roi_heads import CascadeROIHeads
from detectron2.structures import Boxes, Instances
from iou_uniform import analysis
from tests.conftest import TINY_TRAIN, TINY_VAL, config_path, load_tool
from tests.model_checks import build_model_from_config

CFG = config_path("shapes", "iou_uniform_R_18_FPN.yaml")
BASELINE = config_path("shapes", "faster_rcnn_R_18_FPN.yaml")
DATA = ["DATASETS.TRAIN", f"('{TINY_TRAIN}',)", "DATASETS.TEST", f"('{TINY_VAL}',)",
        "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("diag")
    paths = {}
    for name, cfg_file in (("iou_uniform", CFG), ("baseline", BASELINE)):
        _, model = build_model_from_config(cfg_file)
        DetectionCheckpointer(model, save_dir=str(out)).save(name)
        paths[name] = str(out / f"{name}.pth")
    return paths


def run(name, cfg_file, weights_file, out, *options):
    return load_tool("diagnose_iou_uniform").main([
        name, "--config-file", cfg_file, "--num-images", "2", "--output-dir", str(out),
        *options, *DATA, "MODEL.WEIGHTS", weights_file])


def read(out, name):
    assert (out / f"{name}.png").stat().st_size > 0
    return json.loads((out / f"{name}.json").read_text())


def test_iou_hist(tiny_shapes, weights, tmp_path):
    numbers = run("iou_hist", CFG, weights["iou_uniform"], tmp_path)
    assert read(tmp_path, "iou_hist") == numbers
    gen = numbers["generated"]
    assert gen["count"] == sum(gen["hist"]) > 0 and gen["mean_iou"] > 0.5
    assert numbers["rpn_positives"]["count"] == sum(numbers["rpn_positives"]["hist"])


ROW_KEYS = {"interval", "count", "mean_input_iou", "mean_output_iou", "gain",
            "improved_fraction", "worse_fraction", "high_iou_fraction"}
REORDER_KEYS = {"gts_with_candidates", "lose", "win", "tie", "lose_fraction", "win_fraction",
                "mean_iou_top_cls", "mean_iou_top_cls_x_iou", "mean_iou_best",
                "mean_iou_drop_when_lose", "mean_iou_rise_when_win"}


@pytest.fixture(scope="module")
def models(tiny_shapes):
    """``{name: (cfg, untrained model in eval mode)}`` on the tiny shapes splits."""
    out = {}
    for name, cfg_file in (("iou_uniform", CFG), ("baseline", BASELINE)):
        cfg, model = build_model_from_config(cfg_file, *DATA)
        out[name] = (cfg, model.eval())
    return out


def regressor_output(model):
    """The last Linear of the model's box regressor (deltas)."""
    heads = model.roi_heads
    return heads.reg_iou_head.bbox_pred if hasattr(heads, "reg_iou_head") else \
        heads.box_predictor.bbox_pred


@pytest.mark.parametrize("source", ["generated", "proposals"])
@pytest.mark.parametrize("model", ["iou_uniform", "baseline"])
def test_loc_gain(tiny_shapes, weights, tmp_path, model, source):
    numbers = run("loc_gain", CFG if model == "iou_uniform" else BASELINE, weights[model],
                  tmp_path, "--source", source)
    assert read(tmp_path, f"loc_gain_{source}") == numbers
    assert set(numbers) == {"roi_heads", "source", "images", "boxes", "kept", "bins",
                            "mean_gain", "below_0.5"}
    assert numbers["source"] == source
    assert numbers["roi_heads"] == ("IoUUniformROIHeads" if model == "iou_uniform"
                                    else "StandardROIHeads")
    bins, below = numbers["bins"], numbers["below_0.5"]
    assert [b["interval"][0] for b in bins] == pytest.approx(
        [0.5, 0.6, 0.7, 0.8, 0.9] if source == "proposals" else [0.5 + 0.05 * k for k in range(10)])
    assert [b["interval"] for b in below] == ([[0.3, 0.4], [0.4, 0.5]] if source == "proposals"
                                              else [])
    assert 0 < numbers["kept"] == sum(b["count"] for b in bins) <= numbers["boxes"]
    for b in bins + below:
        assert set(b) == ROW_KEYS
        if b["count"]:
            assert b["interval"][0] < b["mean_input_iou"] <= b["interval"][1]
            assert b["gain"] == pytest.approx(b["mean_output_iou"] - b["mean_input_iou"], abs=1e-6)
            assert b["improved_fraction"] + b["worse_fraction"] <= 1


def test_gain_intervals_are_lower_open_upper_closed():
    """Input IoU 0.6 counts in (0.5, 0.6], 1.0 in (0.9, 1.0]; 0.5 and below is outside the
    table; every interval gets its own boxes."""
    ins = np.array([0.5, 0.55, 0.6, 0.65, 0.75, 0.85, 0.95, 1.0], np.float32)
    outs = ins + np.array([0, 0.1, -0.1, 0, 0, 0, 0, -0.2], np.float32)
    rows = analysis._gain_rows(ins, outs, analysis.PROPOSAL_EDGES[2:])
    assert [r["count"] for r in rows] == [2, 1, 1, 1, 2]
    assert rows[0]["improved_fraction"] == rows[0]["worse_fraction"] == 0.5
    assert rows[-1]["gain"] == pytest.approx(-0.1) and rows[-1]["worse_fraction"] == 0.5
    # output IoU above 0.9: 0.95 and 0.8 in (0.9, 1.0], none below
    assert [r["high_iou_fraction"] for r in rows] == [0, 0, 0, 0, 0.5]


@pytest.mark.parametrize("model", ["iou_uniform", "baseline"])
def test_loc_gain_of_a_zero_delta_regressor_is_zero(models, model):
    """A regressor whose deltas are 0 leaves every proposal where it is: no gain, no box made
    better or worse, in every interval."""
    cfg, m = models[model]
    m = copy.deepcopy(m)
    layer = regressor_output(m)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    numbers = analysis.loc_gain(cfg, m, 2, source="proposals")
    assert numbers["kept"] > 0 and numbers["mean_gain"] == pytest.approx(0, abs=1e-6)
    rows = [b for b in numbers["bins"] + numbers["below_0.5"] if b["count"]]
    assert rows
    for b in rows:
        assert b["gain"] == pytest.approx(0, abs=1e-6)
        assert b["improved_fraction"] == b["worse_fraction"] == 0


def test_regress_takes_the_deltas_of_the_given_class(models):
    """Baseline: class-specific deltas, the ones of each box's class; IoU-uniform: one
    class-agnostic regression for every class."""
    boxes = Boxes(torch.tensor([[20.0, 20, 60, 60], [30, 40, 90, 100]]))
    classes = torch.tensor([1, 2])
    for name, (_, m) in models.items():
        m = copy.deepcopy(m)
        layer = regressor_output(m)
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
        with torch.no_grad():
            layer.bias[4 if name == "baseline" else 0] = 1.0  # dx of class 1 / of every box
            features = m.backbone(torch.zeros(1, 3, 128, 160))
            out = analysis.regress(m, features, boxes, classes, (128, 160))
        shift = out - boxes.tensor
        assert (shift[0, [0, 2]] > 1).all()  # moved right by dx / 10 of its width
        assert torch.allclose(shift[0, [1, 3]], torch.zeros(2), atol=1e-4)
        moved = name == "iou_uniform"  # class 2 has no delta in the baseline
        assert bool((shift[1].abs() > 1).any()) == moved


def test_iou_pred(tiny_shapes, weights, tmp_path):
    numbers = run("iou_pred", CFG, weights["iou_uniform"], tmp_path)
    assert read(tmp_path, "iou_pred") == numbers
    on, off = numbers["efo_on"], numbers["efo_off"]
    assert on["detections"] > 0 and off["detections"] > 0
    with pytest.raises(ValueError, match="IoUUniformROIHeads"):
        run("iou_pred", BASELINE, weights["baseline"], tmp_path)
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS"):
        run("iou_pred", CFG, str(tmp_path / "none.pth"), tmp_path)


def test_reorder(tiny_shapes, weights, tmp_path):
    numbers = run("reorder", CFG, weights["iou_uniform"], tmp_path)
    assert read(tmp_path, "reorder") == numbers
    assert set(numbers) == {"roi_heads", "images", "gts", "match_iou", "score_thresh",
                            "efo_on", "efo_off"}
    for key in ("efo_on", "efo_off"):
        r = numbers[key]
        assert set(r) == REORDER_KEYS
        assert 0 < r["gts_with_candidates"] <= numbers["gts"]
        assert r["lose"] + r["win"] + r["tie"] == r["gts_with_candidates"]
        for top in ("mean_iou_top_cls", "mean_iou_top_cls_x_iou"):
            assert 0.5 <= r[top] <= r["mean_iou_best"] <= 1
    with pytest.raises(ValueError, match="IoUUniformROIHeads"):
        run("reorder", BASELINE, weights["baseline"], tmp_path)


def test_reorder_with_a_constant_iou_prediction_never_reorders(models):
    """u the same for every box: p_c x u ranks as p_c, every GT's top box is the same."""
    cfg, m = models["iou_uniform"]
    m = copy.deepcopy(m)
    torch.nn.init.zeros_(m.roi_heads.reg_iou_head.iou_pred.weight)
    torch.nn.init.constant_(m.roi_heads.reg_iou_head.iou_pred.bias, 0.7)
    numbers = analysis.reorder(cfg, m, 2)
    for key in ("efo_on", "efo_off"):
        r = numbers[key]
        assert r["gts_with_candidates"] > 0
        assert r["lose"] == r["win"] == 0 and r["tie"] == r["gts_with_candidates"]
        assert r["mean_iou_top_cls"] == r["mean_iou_top_cls_x_iou"]


@pytest.mark.parametrize("model", ["iou_uniform", "baseline"])
def test_top_origin(tiny_shapes, weights, tmp_path, model):
    numbers = run("top_origin", CFG if model == "iou_uniform" else BASELINE, weights[model],
                  tmp_path)
    assert read(tmp_path, "top_origin") == numbers
    assert set(numbers) == {"roi_heads", "images", "gts", "match_iou", "top_boxes",
                            "mean_output_iou", "high_iou_fraction", "intervals"}
    rows = numbers["intervals"]
    assert [r["interval"][0] for r in rows] == pytest.approx([0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                                                              0.9])
    # one top box per GT with candidates, each in one interval of its proposal's IoU
    assert 0 < numbers["top_boxes"] == sum(r["count"] for r in rows) <= numbers["gts"]
    assert 0.5 <= numbers["mean_output_iou"] <= 1
    for r in rows:
        assert set(r) == ROW_KEYS
        if r["count"]:
            assert r["mean_output_iou"] >= 0.5  # matched at IoU >= 0.5


@pytest.mark.parametrize("model", ["iou_uniform", "baseline"])
def test_top_origin_of_a_zero_delta_regressor_keeps_the_proposals(models, model):
    """Deltas 0: every top box is its proposal, output IoU = input IoU in every interval, and
    only proposals at IoU >= 0.5 can match."""
    cfg, m = models[model]
    m = copy.deepcopy(m)
    layer = regressor_output(m)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    numbers = analysis.top_origin(cfg, m, 2)
    rows = [r for r in numbers["intervals"] if r["count"]]
    assert rows and numbers["top_boxes"] > 0
    for r in rows:
        assert r["interval"][0] >= 0.4  # (0.4, 0.5] holds IoU 0.5 itself
        assert r["gain"] == pytest.approx(0, abs=1e-5)


def test_top_origin_takes_the_top_scoring_candidate(monkeypatch):
    """The GT's top box is its best-scored matched candidate of its class, not its
    best-localized one; a better-scored box of another class or below the match IoU is not
    its top box. Input IoU: the candidate's proposal's."""
    gt = Instances((200, 200), gt_boxes=Boxes(torch.tensor([[0.0, 0, 100, 100]])),
                   gt_classes=torch.tensor([0]))
    candidates = [  # source box, regressed box, class, score
        ([0, 0, 100, 50], [0, 0, 100, 95], 0, 0.9),  # input 0.5, output 0.95: the top box
        ([0, 0, 100, 100], [0, 0, 100, 100], 0, 0.5),  # better localized, lower score
        ([0, 0, 100, 100], [0, 0, 100, 100], 1, 0.99),  # another class
        ([0, 0, 100, 40], [0, 0, 100, 40], 0, 0.99),  # output IoU 0.4 < 0.5: not matched
    ]
    src, box, cls, score = zip(*candidates)
    monkeypatch.setattr(analysis, "_batches", lambda cfg, dataset, n: [None])
    monkeypatch.setattr(analysis, "_features_and_proposals", lambda model, d: (None, None, gt))
    monkeypatch.setattr(analysis, "_scored_candidates", lambda model, f, p: (
        Boxes(torch.tensor(src, dtype=torch.float32)),
        Boxes(torch.tensor(box, dtype=torch.float32)), torch.tensor(cls), torch.tensor(score)))
    model = SimpleNamespace(roi_heads=SimpleNamespace())
    cfg = SimpleNamespace(DATASETS=SimpleNamespace(TEST=["x"]))
    numbers = analysis.top_origin(cfg, model, 1)
    assert numbers["top_boxes"] == numbers["gts"] == 1
    assert numbers["mean_output_iou"] == pytest.approx(0.95)
    assert numbers["high_iou_fraction"] == 1
    (row,) = [r for r in numbers["intervals"] if r["count"]]
    assert row["interval"] == [0.4, 0.5]
    assert row["mean_input_iou"] == pytest.approx(0.5)
    assert row["gain"] == pytest.approx(0.45)


def test_top_origin_refuses_a_cascade():
    model = SimpleNamespace(roi_heads=CascadeROIHeads.__new__(CascadeROIHeads))
    with pytest.raises(ValueError, match="one regression pass"):
        analysis._scored_candidates(model, {}, None)


def test_ranking_reads_a_runs_detections(tiny_shapes, tmp_path):
    """The GT boxes themselves as detections: AP, oracle AP and recall 100 at every threshold;
    a run without saved detections is refused with the file it looked for."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    DatasetCatalog.get(TINY_VAL)  # writes the split
    with open(MetadataCatalog.get(TINY_VAL).json_file) as f:
        gt = json.load(f)
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0} for a in gt["annotations"]]
    results = tmp_path / "dets.json"
    results.write_text(json.dumps(dets))
    tool = load_tool("diagnose_iou_uniform")
    numbers = tool.main(["ranking", "--config-file", BASELINE, "--results", str(results),
                         "--output-dir", str(tmp_path), *DATA])
    assert read(tmp_path, "ranking") == numbers
    assert numbers["dataset"] == TINY_VAL and numbers["detections"] == len(dets) > 0
    for key in ("AP", "AP_oracle", "recall"):
        assert list(numbers[key]) == [f"AP{t}" for t in range(50, 100, 5)]
        assert all(v == pytest.approx(100) for v in numbers[key].values())
    with pytest.raises(FileNotFoundError, match="coco_instances_results.json"):
        tool.main(["ranking", "--config-file", BASELINE, "--output-dir", str(tmp_path), *DATA,
                   "OUTPUT_DIR", str(tmp_path / "no_run")])


def test_towers(tiny_shapes, weights, tmp_path):
    numbers = run("towers", CFG, weights["iou_uniform"], tmp_path)
    assert read(tmp_path, "towers") == numbers
    assert set(numbers["layers"]) == {"cls.fc_relu1", "cls.fc_relu2", "reg.fc_relu1",
                                      "reg.fc_relu2"}
    assert numbers["probes"] > 1 and numbers["input"]["dim"] == 64 * 7 * 7
    assert -1 <= numbers["input"]["mean_pairwise_cosine"] <= 1
    for layer in numbers["layers"].values():
        assert layer["units"] == 256
        assert 0 <= layer["dead_fraction"] <= 1 - layer["active_fraction"] <= 1
    # a baseline has one tower, shared by classification and regression
    baseline = run("towers", BASELINE, weights["baseline"], tmp_path)
    assert set(baseline["layers"]) == {"cls.fc_relu1", "cls.fc_relu2"}


def test_towers_counts_units_that_never_fire(models):
    """64 units of the regression tower's first FC pushed far below 0: exactly they are dead,
    and the classification tower is untouched."""
    cfg, m = models["iou_uniform"]
    before = analysis.tower_activity(cfg, m, 2)
    m = copy.deepcopy(m)
    with torch.no_grad():
        m.roi_heads.reg_iou_head.trunk.fc1.bias[:64] = -1e6
        m.roi_heads.reg_iou_head.trunk.fc1.bias[64:] = 1e6
    numbers = analysis.tower_activity(cfg, m, 2)
    assert numbers["layers"]["reg.fc_relu1"]["dead_fraction"] == 64 / 256
    assert numbers["layers"]["reg.fc_relu1"]["active_fraction"] == 192 / 256
    assert numbers["layers"]["cls.fc_relu1"] == before["layers"]["cls.fc_relu1"]
    assert numbers["input"] == before["input"]


def test_mean_pairwise_cosine():
    assert analysis._mean_pairwise_cosine(torch.ones(5, 3)) == pytest.approx(1)
    assert analysis._mean_pairwise_cosine(torch.eye(4)) == pytest.approx(0)
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    pairs = [torch.nn.functional.cosine_similarity(x[i], x[j], dim=0)
             for i in range(3) for j in range(i + 1, 3)]
    assert analysis._mean_pairwise_cosine(x) == pytest.approx(float(sum(pairs) / 3))
