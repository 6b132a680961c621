"""The multi-seed ablation runner (d2ext/ablation.py, tools/ablate.py): the shipped groups, the
results file, the tables made from it, and a resumable run of a small ablation."""
import json
import os
import platform
import re

import pytest
import torch

from d2ext.ablation import (
    DATA_VERSION,
    AblationError,
    Row,
    ablation_set_files,
    find_run,
    group_table,
    load_ablation_sets,
    load_ablations,
    read_results,
    render_tables,
    run_ablation,
    run_dir,
    stale_tables,
    eval_dir,
)
from detectron2.engine import default_argument_parser
from tests.conftest import REPO, TINY_TRAIN, TINY_VAL, load_tool
from train_net import load_config

ablate = load_tool("ablate")
SHIPPED, RESULTS = (os.path.join(REPO, p) for p in ablation_set_files("shapes"))
PAPER_GROUPS = {"readme", "iou_uniform_table4", "iou_uniform_table6", "iou_uniform_score",
                "iou_balanced_faster_rcnn", "iou_balanced_retinanet", "rga_prm", "padet_table2",
                "composed"}


def test_shipped_groups_cover_the_papers_ablations():
    seeds, groups = load_ablations(SHIPPED, REPO)
    assert len(seeds) >= 3
    assert PAPER_GROUPS <= set(groups)
    assert [r.name for r in groups["padet_table2"]["rows"]] == ["encoder_decoder", "apm",
                                                                "apm_fam"]
    _, primitives = load_ablations(os.path.join(REPO, ablation_set_files("primitives")[0]), REPO)
    assert {"iou_uniform_table4", "iou_uniform_table6", "iou_uniform_score",
            "iou_balanced_faster_rcnn"} <= set(primitives)


@pytest.mark.parametrize("name", ["shapes", "primitives"])
def test_every_shipped_row_is_a_valid_config_of_its_dataset(name):
    _, groups = load_ablations(os.path.join(REPO, ablation_set_files(name)[0]), REPO)
    for spec in groups.values():
        for row in spec["rows"]:  # unknown keys or bad values raise here
            cfg = load_config(os.path.join(REPO, row.config), [*row.opts, *row.test_opts])
            assert cfg.DATASETS.TEST == (f"{name}_val",), row


def test_rows_with_equal_config_and_opts_share_their_training_run():
    _, groups = load_ablations(SHIPPED, REPO)
    table4 = {r.name: r for r in groups["iou_uniform_table4"]["rows"]}
    # "+ uniform samples" is "+ EFO" evaluated without EFO: one trained model per seed
    assert run_dir("out", table4["uniform_samples"], 1) == run_dir("out", table4["efo"], 1)
    assert run_dir("out", table4["efo"], 1) != run_dir("out", table4["tuned_weights"], 1)
    assert run_dir("out", table4["efo"], 1) != run_dir("out", table4["efo"], 2)
    readme = {r.name: r for r in groups["readme"]["rows"]}
    assert run_dir("out", readme["faster_rcnn"], 3) == run_dir("out", table4["baseline"], 3)
    version = f"v{DATA_VERSION}"
    assert run_dir("out", readme["faster_rcnn"], 3) == os.path.join(
        "out", version, "shapes", "faster_rcnn_R_18_FPN", "seed3")
    other = Row("g", "b", "configs/primitives/faster_rcnn_R_18_FPN.yaml")
    assert run_dir("out", other, 3) == os.path.join("out", version, "primitives",
                                                    "faster_rcnn_R_18_FPN", "seed3")


@pytest.mark.parametrize("row, message", [
    ({"name": "a"}, "needs 'name' and 'config'"),
    ({"name": "a", "config": "configs/none.yaml"}, "config file not found: configs/none.yaml"),
    ({"name": "a", "config": "configs/Base-RCNN-FPN.yaml", "opts": ["SEED"]}, "KEY, VALUE pairs"),
    ({"name": "a", "config": "configs/Base-RCNN-FPN.yaml", "baseline": "b"}, "baseline 'b'"),
    ({"name": "a", "config": "configs/Base-RCNN-FPN.yaml", "seed": 1}, "unknown keys ['seed']"),
])
def test_malformed_ablation_file_names_file_group_and_row(tmp_path, row, message):
    path = tmp_path / "groups.yaml"
    path.write_text(json.dumps({"seeds": [1], "groups": {"g": {"rows": [row]}}}))
    with pytest.raises(AblationError, match=re.escape(message)) as e:
        load_ablations(str(path), REPO)
    assert str(path) in str(e.value) and "group 'g'" in str(e.value)


def _write_finished_run(output_dir, metrics=None):
    """What a finished train_net.py run leaves in its OUTPUT_DIR for the runner to record: the
    evaluation's results.json and config.yaml (7 iterations)."""
    os.makedirs(os.path.join(output_dir, "inference"))
    with open(os.path.join(output_dir, "inference", "results.json"), "w") as f:
        json.dump({"bbox": metrics or {"AP": 50.0}}, f)
    with open(os.path.join(output_dir, "config.yaml"), "w") as f:
        f.write("SOLVER:\n  MAX_ITER: 7\n")


def _recording_launcher(calls, record):
    """A stand-in for train_net.py: appends ``record(argv)`` to ``calls`` and leaves a finished
    run in the OUTPUT_DIR."""
    def launch(argv):
        calls.append(record(argv))
        _write_finished_run(argv[argv.index("OUTPUT_DIR") + 1])
    return launch


def _runs(group, name, aps, ap75s=None, data_version=DATA_VERSION):
    return [{"group": group, "name": name, "seed": s, "train_s": 120.0,
             "data_version": data_version,
             "metrics": {"AP": ap, "AP75": (ap75s or aps)[i]}}
            for i, (s, ap) in enumerate(zip((1, 2, 3), aps))]


def _spec():
    return {"title": "t", "rows": [Row("g", "base", "c.yaml", label="Base"),
                                   Row("g", "method", "c.yaml", ("K", "V"), baseline="base")]}


def test_table_gives_mean_std_and_paired_differences_with_effects_in_bold():
    runs = _runs("g", "base", [30.0, 35.0, 40.0], [20.0, 21.0, 22.0]) + \
        _runs("g", "method", [31.0, 36.4, 40.6], [20.2, 21.5, 21.4])
    lines = group_table("g", _spec(), runs).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    base, method, delta = ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
    ap, ap75 = header.index("AP"), header.index("AP75")
    assert base[:3] == ["Base", "3", "35.0 ± 5.0"] and base[-1] == "2.0 ± 0.0"
    assert method[ap] == "36.0 ± 4.8"
    # paired: +1.0, +1.4, +0.6 -> +1.0 ± 0.4, beyond 2 std; the unpaired spread (5) would hide it
    assert delta[:2] == ["Δ vs Base", "3 paired"] and delta[ap] == "**+1.0 ± 0.4**"
    # +0.2, +0.5, -0.6: within noise, not bold
    assert delta[ap75] == "+0.0 ± 0.6"


def test_differences_pair_only_seeds_both_rows_have():
    runs = _runs("g", "base", [30.0, 35.0, 40.0]) + _runs("g", "method", [31.0, 37.0])
    delta = group_table("g", _spec(), runs).splitlines()[-1]
    assert "| 2 paired |" in delta and "+1.5 ± 0.7" in delta and "**" not in delta


def test_runs_of_an_older_data_version_are_history_only(tmp_path):
    """Runs trained before the current data version (data_version absent: 1) are not found, not
    in the tables, not paired; the runner trains their rows again in the new version's folders
    and keeps the old runs in the file."""
    old = _runs("g", "base", [10.0, 11.0, 12.0], data_version=DATA_VERSION - 1)
    for run in old[:1]:
        del run["data_version"]  # files written before the field existed
    new = _runs("g", "base", [30.0, 35.0, 40.0]) + _runs("g", "method", [31.0, 36.4, 40.6])
    assert find_run(old + new, "g", "base", 1)["metrics"]["AP"] == 30.0
    assert find_run(old, "g", "base", 1) is None
    assert group_table("g", _spec(), old + new) == group_table("g", _spec(), new)
    assert "| 0 |" in group_table("g", _spec(), old).splitlines()[2]
    # an earlier version's table, for the record: its runs only
    assert "| Base | 3 | 11.0 ± 1.0 |" in group_table("g", _spec(), old + new, version=1)
    text = render_tables("<!-- ablation:s/g@v1 -->\n<!-- /ablation:s/g@v1 -->\n",
                         {"s": ({"g": _spec()}, old + new, "s.json")})
    assert "| Base | 3 | 11.0 ± 1.0 |" in text and text.endswith("<!-- /ablation:s/g@v1 -->\n")

    spec = {"title": "t", "rows": [Row("g", "base", "configs/shapes/faster_rcnn_R_18_FPN.yaml")]}
    results, root = str(tmp_path / "results.json"), str(tmp_path / "runs")
    with open(results, "w") as f:
        json.dump(old, f)
    trained = []

    launch = _recording_launcher(trained, lambda argv: argv[argv.index("OUTPUT_DIR") + 1])

    runs = run_ablation({"g": spec}, [1], results, root, launch=launch)
    assert trained == [os.path.join(root, f"v{DATA_VERSION}", "shapes", "faster_rcnn_R_18_FPN",
                                    "seed1")]
    assert find_run(runs, "g", "base", 1)["data_version"] == DATA_VERSION
    assert len(read_results(results)) == len(old) + 1


def test_tables_render_between_markers_and_stale_ones_are_found(tmp_path):
    runs = _runs("g", "base", [30.0, 35.0, 40.0])
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- ablation:s/g -->\nold\n<!-- /ablation:s/g -->\nend\n")
    sets = {"s": ({"g": _spec()}, runs, "s.json")}
    assert stale_tables([str(doc)], sets) == [str(doc)]
    text = render_tables(doc.read_text(), sets)
    assert text.startswith("intro\n<!-- ablation:s/g -->\n") and text.endswith(
        "<!-- /ablation:s/g -->\nend\n")
    assert "| Base | 3 | 35.0 ± 5.0 |" in text and "old" not in text and "s.json" in text
    doc.write_text(text)
    assert stale_tables([str(doc)], sets) == []
    assert stale_tables([str(doc)], {"s": ({"g": _spec()}, runs[:2], "s.json")}) == [str(doc)]
    for marker in ("s/h", "t/g"):
        with pytest.raises(AblationError, match=f"unknown ablation group '{marker}'"):
            render_tables(f"<!-- ablation:{marker} -->\n<!-- /ablation:{marker} -->", sets)


def test_docs_tables_match_the_results_file():
    """Every generated table in README.md and docs/*.md equals what the results file gives
    (after new runs: python tools/ablate.py --write-tables)."""
    sets = load_ablation_sets(repo_root=REPO)
    assert {"shapes", "primitives"} <= set(sets)
    files = ablate.table_files()
    texts = [open(p).read() for p in files]
    assert any("<!-- ablation:shapes/readme -->" in t for t in texts)
    assert stale_tables(files, sets) == []


@pytest.mark.parametrize("name", ["shapes", "primitives"])
def test_results_file_runs_name_shipped_rows_and_hold_every_metric(name):
    ablations, results = (os.path.join(REPO, p) for p in ablation_set_files(name))
    _, groups = load_ablations(ablations, REPO)
    for run in read_results(results):
        row = next(r for r in groups[run["group"]]["rows"] if r.name == run["name"])
        assert (run["config"], tuple(run["opts"]), tuple(run["test_opts"])) == (
            row.config, row.opts, row.test_opts)
        assert {"AP", "AP50", "AP75", "AP90", "APs", "APm"} <= set(run["metrics"])
        assert run["iters"] == load_config(os.path.join(REPO, row.config), row.opts).SOLVER.MAX_ITER


def test_malformed_results_file_is_named(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("[{\"group\": 1")
    with pytest.raises(AblationError, match=str(path)):
        read_results(str(path))
    path.write_text(json.dumps([{"group": "g", "name": "n", "seed": 1}]))
    with pytest.raises(AblationError, match=r"run 0 lacks \['metrics'\]"):
        read_results(str(path))


def test_small_ablation_trains_each_model_once_and_resumes(tiny_shapes, tmp_path, monkeypatch):
    """Two rows sharing a trained model (the second only changes a test-time setting) and one
    seed: one training and one evaluation; the runs land in the results file; running again
    launches nothing, and after removing one run from the file only that one is redone."""
    import train_net

    monkeypatch.chdir(REPO)
    tiny = ("DATASETS.TRAIN", f"('{TINY_TRAIN}',)", "DATASETS.TEST", f"('{TINY_VAL}',)",
            "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
            "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "(1,)",
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    config = "configs/shapes/faster_rcnn_R_18_FPN.yaml"
    spec = {"title": "t", "rows": [
        Row("g", "base", config, tiny),
        Row("g", "nms", config, tiny, ("MODEL.ROI_HEADS.NMS_THRESH_TEST", "0.3"), "base")]}
    launched = []

    def launch(argv):
        launched.append(argv)
        train_net.main(default_argument_parser().parse_args(argv))

    results, root = str(tmp_path / "results.json"), str(tmp_path / "runs")
    runs = run_ablation({"g": spec}, [5], results, root, launch=launch)
    assert len(launched) == 2 and "--eval-only" in launched[1]
    assert read_results(results) == runs and len(runs) == 2
    base, nms = find_run(runs, "g", "base", 5), find_run(runs, "g", "nms", 5)
    assert base["seed"] == 5 and base["iters"] == 2 and base["train_s"] > 0
    assert base["commit"] and base["opts"] == list(tiny)
    if not torch.cuda.is_available():  # on a GPU, "machine" names the GPU
        assert platform.machine() in base["machine"] and base["machine"].endswith(" threads")
    assert nms["test_opts"] == ["MODEL.ROI_HEADS.NMS_THRESH_TEST", "0.3"]
    for run in (base, nms):
        assert set(run["metrics"]) >= {"AP", "AP50", "AP55", "AP95", "APs", "APm", "APl"}
    with open(os.path.join(run_dir(root, spec["rows"][0], 5), "config.yaml")) as f:
        assert "SEED: 5" in f.read()

    assert run_ablation({"g": spec}, [5], results, root, launch=launch) == runs
    assert len(launched) == 2
    # a run missing from the file is recorded again from its finished OUTPUT_DIR
    with open(results, "w") as f:
        json.dump([base], f)
    assert run_ablation({"g": spec}, [5], results, root, launch=launch) == runs
    assert len(launched) == 2
    # an evaluation that did not finish is run again, the training is not
    with open(results, "w") as f:
        json.dump([base], f)
    os.remove(os.path.join(eval_dir(root, spec["rows"][1], 5), "inference", "results.json"))
    run_ablation({"g": spec}, [5], results, root, launch=launch)
    assert len(launched) == 3 and "--eval-only" in launched[2]
    assert find_run(read_results(results), "g", "nms", 5)["metrics"] == nms["metrics"]


def test_a_failed_run_is_reported_and_the_others_go_on(tmp_path):
    """A training that fails (as one stopped by the collapse check does) is not recorded and not
    retried for the row sharing it; the other seeds run and are recorded; the error at the end
    names the failed runs and the log to read."""
    import subprocess

    spec = {"title": "t", "rows": [
        Row("g", "base", "configs/shapes/faster_rcnn_R_18_FPN.yaml"),
        Row("g", "var", "configs/shapes/faster_rcnn_R_18_FPN.yaml", (), ("K", "V"), "base")]}
    launched = []

    def launch(argv):
        out = argv[argv.index("OUTPUT_DIR") + 1]
        launched.append((out, "--eval-only" in argv))
        if argv[argv.index("SEED") + 1] == "2" and "--eval-only" not in argv:
            raise subprocess.CalledProcessError(1, ["train_net.py"])
        _write_finished_run(out, {"AP": 50.0, "AP50": 80.0})

    results, root = str(tmp_path / "results.json"), str(tmp_path / "runs")
    with pytest.raises(AblationError) as e:
        run_ablation({"g": spec}, [1, 2, 3], results, root, launch=launch)
    log = os.path.join(run_dir(root, spec["rows"][0], 2), "log.txt")
    assert str(e.value).startswith(f"2 run(s) failed and are not in {results}")
    assert f"g/base seed 2 (log: {log})" in str(e.value)
    assert "g/var seed 2 (its training failed above)" in str(e.value)
    runs = read_results(results)
    assert sorted((r["name"], r["seed"]) for r in runs) == [
        ("base", 1), ("base", 3), ("var", 1), ("var", 3)]
    assert find_run(runs, "g", "base", 3)["iters"] == 7
    # 3 trainings tried (seed 2 once), 2 evaluations (not on seed 2's missing weights)
    assert sorted(evaluated for _, evaluated in launched) == [False] * 3 + [True] * 2


def test_a_run_already_in_the_file_under_another_row_is_not_trained_again(tmp_path):
    """A row whose model and evaluation (config, opts, test_opts, seed) are already a current run
    of another group is recorded from that run, saying which, with no training; a different
    test-time setting, another seed or an older data version's run is not reused."""
    config = "configs/shapes/faster_rcnn_R_18_FPN.yaml"
    readme = _runs("readme", "faster_rcnn", [30.0, 35.0])
    for run in readme:
        run.update(config=config, opts=[], test_opts=[], commit="abc", train_s=600.0)
    spec = {"title": "t", "rows": [Row("table", "baseline", config)]}
    results, root = str(tmp_path / "results.json"), str(tmp_path / "runs")
    with open(results, "w") as f:
        json.dump(readme, f)
    launched = []
    runs = run_ablation({"table": spec}, [1, 2], results, root,
                        launch=lambda argv: launched.append(argv))
    assert launched == []
    for seed, ap in ((1, 30.0), (2, 35.0)):
        reused = find_run(runs, "table", "baseline", seed)
        assert reused["metrics"]["AP"] == ap and reused["same_run_as"] == "readme/faster_rcnn"
        assert (reused["commit"], reused["train_s"]) == ("abc", 600.0)


def test_rows_sharing_a_training_come_from_the_same_model(tmp_path):
    """When a row of a group needs the trained weights (a test-time variant) and they are not
    on this machine, the row sharing that training is recorded from the new training too, not
    from the file's run of an earlier one (two trainings can differ); once a training has
    finished here, rows are recorded from it; an older data version's run is not reused."""
    config = "configs/shapes/faster_rcnn_R_18_FPN.yaml"
    readme = _runs("readme", "faster_rcnn", [30.0, 35.0])
    for run in readme:
        run.update(config=config, opts=[], test_opts=[], commit="abc", train_s=600.0)
    old = _runs("readme", "faster_rcnn", [20.0, 21.0, 22.0], data_version=DATA_VERSION - 1)
    for run in old:
        run.update(config=config, opts=[], test_opts=[])
    spec = {"title": "t", "rows": [Row("table", "baseline", config),
                                   Row("table", "nms", config, (), ("K", "V"), "baseline")]}
    results, root = str(tmp_path / "results.json"), str(tmp_path / "runs")
    with open(results, "w") as f:
        json.dump(readme + old, f)
    launched = []

    launch = _recording_launcher(
        launched, lambda argv: (argv[argv.index("SEED") + 1], "--eval-only" in argv))

    runs = run_ablation({"table": spec}, [1, 2, 3], results, root, launch=launch)
    for seed in (1, 2, 3):  # the readme runs of seeds 1-2 are another training: not paired here
        baseline = find_run(runs, "table", "baseline", seed)
        assert baseline["metrics"]["AP"] == 50.0 and "same_run_as" not in baseline
        assert find_run(runs, "table", "nms", seed)["metrics"]["AP"] == 50.0
    # trained: every seed's model, once; evaluated with K V: every seed
    assert sorted(launched) == [("1", False), ("1", True), ("2", False), ("2", True),
                                ("3", False), ("3", True)]
    assert read_results(results) == sorted(runs, key=lambda r: (r["group"], r["name"], r["seed"]))
    # the training of seed 1 is on this machine: a row of another group recorded from it,
    # not from the file's readme run (AP 30)
    other = {"title": "t", "rows": [Row("other", "baseline", config)]}
    runs = run_ablation({"other": other}, [1], results, root, launch=launch)
    assert find_run(runs, "other", "baseline", 1)["metrics"]["AP"] == 50.0
    assert len(launched) == 6


def test_ablate_refuses_an_unknown_group_before_training(capsys):
    with pytest.raises(SystemExit, match=re.escape("no group ['nope']")):
        ablate.main(["--groups", "nope"])


def test_ablate_rows_trains_only_the_named_rows_and_prints_whole_tables(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    trained = {}

    def fake_run_ablation(groups, seeds, results, root, rows):
        trained.update({g: [row.name for row in spec["rows"] if row.name in rows]
                        for g, spec in groups.items()})
        return read_results(results)

    monkeypatch.setattr(ablate, "run_ablation", fake_run_ablation)
    assert ablate.main(["--groups", "readme", "iou_balanced_retinanet", "--rows", "retinanet",
                        "iou_balanced_retinanet", "baseline", "--seeds", "4"]) == 0
    assert trained == {"readme": ["retinanet", "iou_balanced_retinanet"],
                       "iou_balanced_retinanet": ["baseline"]}
    assert "IoU-uniform R-CNN" in capsys.readouterr().out  # the readme table keeps every row
    trained.clear()
    with pytest.raises(SystemExit, match=re.escape("no row ['nope']")):
        ablate.main(["--groups", "readme", "--rows", "retinanet", "nope"])
    assert trained == {}


def test_rows_run_alone_still_share_their_training_with_the_group(tmp_path):
    """``rows`` runs only the named rows, but a named row whose group has an unnamed row still
    needing that training's weights is trained here, not copied from the file's earlier run."""
    config = "configs/shapes/faster_rcnn_R_18_FPN.yaml"
    readme = _runs("readme", "faster_rcnn", [30.0])
    readme[0].update(config=config, opts=[], test_opts=[])
    spec = {"title": "t", "rows": [Row("table", "baseline", config),
                                   Row("table", "nms", config, (), ("K", "V"), "baseline")]}
    results, root = str(tmp_path / "results.json"), str(tmp_path / "runs")
    with open(results, "w") as f:
        json.dump(readme, f)
    launched = []

    launch = _recording_launcher(launched, lambda argv: "--eval-only" in argv)

    runs = run_ablation({"table": spec}, [1], results, root, launch=launch, rows=["baseline"])
    assert launched == [False]  # trained, not evaluated: nms was not asked for
    assert find_run(runs, "table", "baseline", 1)["metrics"]["AP"] == 50.0
    assert find_run(runs, "table", "nms", 1) is None
