"""d2ext.checkpoint.ProjectCheckpointer: weights load without running code, bad or foreign
weights are named, checkpoints are written atomically, a resume skips a truncated checkpoint."""
import logging
import os
import pickle
import re

import numpy as np
import pytest
import torch
from torch import nn

import train_net
from d2ext.checkpoint import ProjectCheckpointer, WeightsFileError
from tests.conftest import TINY_VAL, config_path, run_train_net, train_net_args
from tests.model_checks import build_model_from_config


class _Evil:
    """Unpickling it runs ``touch <target>``."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 1, bias=False)


class _TinyResNet(nn.Module):
    """Named like detectron2's ResNet, so Caffe2 names (``res2_0_branch2a_w``) map onto it."""

    def __init__(self):
        super().__init__()
        self.stem = _Block()
        self.res2 = nn.ModuleList([_Block()])


def _caffe2_blobs():
    rng = np.random.default_rng(0)
    return {"conv1_w": rng.standard_normal((2, 2, 1, 1)).astype(np.float32),
            "res2_0_branch2a_w": rng.standard_normal((2, 2, 1, 1)).astype(np.float32)}


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return str(path)


def _linear_checkpointer(save_dir, seed):
    torch.manual_seed(seed)
    return ProjectCheckpointer(nn.Linear(3, 2), save_dir=str(save_dir))


# --- reading never executes code -----------------------------------------------------------

@pytest.mark.parametrize("ext", [".pkl", ".pth"])
def test_weights_that_run_code_are_refused_naming_file_and_global(tmp_path, ext):
    target = tmp_path / "pwned"
    path = str(tmp_path / f"evil{ext}")
    if ext == ".pkl":
        _pickle(path, {"model": {"w": _Evil(target)}, "__author__": "Detectron"})
    else:
        torch.save({"model": {"w": _Evil(target)}}, path)
    with pytest.raises(WeightsFileError,
                       match=rf"refusing to load {re.escape(path)}: it references \S*system, "
                             "which a weights file never needs"):
        ProjectCheckpointer(_TinyResNet()).load(path)
    assert not target.exists()


def test_detectron2_model_zoo_pkl_loads_into_the_model(tmp_path):
    """detectron2's model-zoo format: {"model": arrays by detectron2 name, "__author__": ...}."""
    blobs = _caffe2_blobs()
    arrays = {"stem.conv1.weight": blobs["conv1_w"],
              "res2.0.conv1.weight": blobs["res2_0_branch2a_w"]}
    path = _pickle(tmp_path / "zoo.pkl", {"model": arrays, "__author__": "Detectron2 Zoo"})
    assert ProjectCheckpointer(_TinyResNet())._load_file(path)["__author__"] == "Detectron2 Zoo"
    model = _TinyResNet()
    ProjectCheckpointer(model).load(path)
    assert np.array_equal(model.stem.conv1.weight.detach().numpy(), blobs["conv1_w"])
    assert np.array_equal(model.res2[0].conv1.weight.detach().numpy(),
                          blobs["res2_0_branch2a_w"])


@pytest.mark.parametrize("wrap", [False, True], ids=["imagenet", "blobs"])
def test_caffe2_pkl_reads_as_detectron2_reads_it(tmp_path, wrap):
    """A plain dict of blobs (ImageNet models) or one under "blobs" (Detectron detection
    models): the arrays, without momentum blobs, marked for Caffe2 name matching."""
    blobs = _caffe2_blobs()
    momentum = {"conv1_w_momentum": np.zeros(1, np.float32)}
    data = {"blobs": {**blobs, **momentum}, "cfg": "a yaml string"} if wrap else {
        **blobs, **momentum}
    path = _pickle(tmp_path / "c2.pkl", data)
    loaded = ProjectCheckpointer(_TinyResNet())._load_file(path)
    assert loaded["__author__"] == "Caffe2" and loaded["matching_heuristics"]
    assert set(loaded["model"]) == set(blobs)
    assert all(np.array_equal(loaded["model"][k], v) for k, v in blobs.items())
    model = _TinyResNet()
    ProjectCheckpointer(model).load(path)
    assert np.array_equal(model.stem.conv1.weight.detach().numpy(), blobs["conv1_w"])


def test_pycls_pyth_reads_as_detectron2_reads_it(tmp_path):
    """pycls ``.pyth``: its "model_state" without BatchNorm's num_batches_tracked."""
    path = str(tmp_path / "regnet.pyth")
    torch.save({"model_state": {"w": torch.ones(2), "bn.num_batches_tracked": torch.tensor(3)}},
               path)
    loaded = ProjectCheckpointer(_TinyResNet())._load_file(path)
    assert loaded["__author__"] == "pycls" and loaded["matching_heuristics"]
    assert list(loaded["model"]) == ["w"]


# --- bad weights are named -------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".pkl", ".pth"])
def test_text_file_as_weights_is_named(tmp_path, ext):
    path = tmp_path / f"notes{ext}"
    path.write_text("these are not weights\n")
    with pytest.raises(WeightsFileError,
                       match=rf"cannot load {re.escape(str(path))}: it is a text file, not "):
        ProjectCheckpointer(_TinyResNet()).load(str(path))


def test_eval_only_with_another_architecture_names_the_fraction(tiny_shapes, tmp_path):
    """RetinaNet weights into a Faster R-CNN: the backbone loads, the heads do not; eval stops
    unless --min-loaded-fraction allows it."""
    _, retinanet = build_model_from_config(config_path("shapes", "retinanet_R_18_FPN.yaml"))
    weights = str(tmp_path / "retinanet.pth")
    torch.save({"model": retinanet.state_dict()}, weights)
    faster = config_path("shapes", "faster_rcnn_R_18_FPN.yaml")
    with pytest.raises(WeightsFileError,
                       match=rf"{re.escape(weights)} filled \d+ of the model's \d+ parameter "
                             r"tensors \(\d+%; at least 90% expected\)"):
        run_train_net(faster, tmp_path / "refused", "MODEL.WEIGHTS", weights, eval_only=True)

    train_net.cli(["--config-file", faster, "--eval-only", "--min-loaded-fraction", "0",
                   "OUTPUT_DIR", str(tmp_path / "allowed"), "DATASETS.TEST", f"('{TINY_VAL}',)",
                   "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights])
    assert (tmp_path / "allowed" / "inference").is_dir()


def test_tools_refuse_weights_of_another_architecture(tmp_path):
    from d2ext.tooling import build_model_with_weights

    cfg, retinanet = build_model_from_config(config_path("shapes", "retinanet_R_18_FPN.yaml"))
    weights = str(tmp_path / "retinanet.pth")
    torch.save({"model": retinanet.state_dict()}, weights)
    faster, _ = build_model_from_config(config_path("shapes", "faster_rcnn_R_18_FPN.yaml"))
    with pytest.raises(WeightsFileError, match=re.escape(weights)):
        build_model_with_weights(faster, weights=weights)
    build_model_with_weights(cfg, weights=weights)  # its own architecture loads


def test_trainer_loads_partial_weights_and_saves_through_project_checkpointer(
        tiny_shapes, tmp_path):
    """Training from MODEL.WEIGHTS that fill the backbone only (as ImageNet weights do) works;
    the trainer's checkpointer, also in its periodic-checkpoint hook, is a ProjectCheckpointer
    that keeps detectron2's checkpointables."""
    cfg_file = config_path("shapes", "faster_rcnn_R_18_FPN.yaml")
    _, model = build_model_from_config(cfg_file)
    backbone = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.bottom_up")}
    weights = str(tmp_path / "backbone.pth")
    torch.save({"model": backbone}, weights)
    args = train_net_args(cfg_file, tmp_path / "run", "MODEL.WEIGHTS", weights)
    trainer = train_net.Trainer(train_net.setup(args))
    trainer.resume_or_load(resume=False)
    key = "backbone.bottom_up.stem.conv1.weight"
    assert torch.equal(trainer.model.state_dict()[key], backbone[key])
    assert isinstance(trainer.checkpointer, ProjectCheckpointer)
    # detectron2 main checkpoints the optimizer inside "trainer"; on 0.6 the Trainer adds it
    kept = {"trainer"} if train_net.TRAINER_CHECKPOINTS_OPTIMIZER else {"trainer", "optimizer"}
    assert kept <= set(trainer.checkpointer.checkpointables)
    holders = [h for h in trainer._hooks if hasattr(h, "checkpointer")]
    assert holders and all(h.checkpointer is trainer.checkpointer for h in holders)


# --- atomic checkpoints ----------------------------------------------------------------------

def test_save_is_atomic_and_a_crash_mid_write_keeps_the_previous_checkpoint(
        tmp_path, monkeypatch):
    ckpt = _linear_checkpointer(tmp_path, seed=0)
    ckpt.save("model_0000001")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    good = (tmp_path / "model_0000001.pth").read_bytes()

    def crash(data, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    for name in ("model_0000001", "model_0000002"):
        with pytest.raises(OSError, match="disk full"):
            ckpt.save(name)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "model_0000001.pth").read_bytes() == good
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("saved, truncated, expected", [
    (["model_0000001", "model_0000003"], "model_0000003.pth", "model_0000001.pth"),
    (["model_0000002", "model_final"], "model_final.pth", "model_0000002.pth"),
    (["model_0000001", "model_final", "model_0000005"], "model_0000005.pth", "model_final.pth"),
])
def test_resume_falls_back_to_the_newest_checkpoint_that_loads(
        tmp_path, caplog, saved, truncated, expected):
    states = {}
    for seed, name in enumerate(saved):
        ckpt = _linear_checkpointer(tmp_path, seed)
        ckpt.save(name, iteration=seed)
        states[f"{name}.pth"] = ckpt.model.state_dict()
    assert (tmp_path / "last_checkpoint").read_text() == truncated
    _truncate(tmp_path / truncated)

    resumed = _linear_checkpointer(tmp_path, seed=99)
    with caplog.at_level(logging.WARNING, logger="d2ext.checkpoint"):
        extra = resumed.resume_or_load("", resume=True)
    assert extra["iteration"] == saved.index(expected[:-len(".pth")])
    assert all(torch.equal(v, states[expected][k]) for k, v in resumed.model.state_dict().items())
    assert (tmp_path / "last_checkpoint").read_text() == expected
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert truncated in warnings and f"Resuming from {tmp_path / expected}" in warnings
