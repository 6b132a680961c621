"""d2ext.run_state on its own: the run-file guard, atomic writes, metrics.json records, the
resumable sampler and the RNG checkpoint. train_net.py end to end: tests/test_train_net.py."""
import itertools
import json
import os
import random
import types

import numpy as np
import pytest
import torch

from d2ext import run_state
from d2ext.atomic import write_text_atomically
from detectron2.data.samplers import TrainingSampler
from detectron2.utils.events import EventStorage


@pytest.mark.parametrize("name", ["model_0000009.pth", "model_final.pth", "last_checkpoint",
                                  "metrics.json", "config.yaml"])
def test_each_run_file_refuses_a_fresh_run(tmp_path, name):
    (tmp_path / "log.txt").write_text("old log\n")
    run_state.check_fresh_output_dir(str(tmp_path))  # a log alone is no run
    (tmp_path / name).write_text("old")
    with pytest.raises(FileExistsError) as err:
        run_state.check_fresh_output_dir(str(tmp_path))
    assert str(tmp_path) in str(err.value) and name in str(err.value)
    assert "--resume" in str(err.value) and "another OUTPUT_DIR" in str(err.value)
    run_state.check_fresh_output_dir(str(tmp_path / "missing"))


def test_write_text_atomic_interrupted_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("old: 1\n")

    def killed(fd):
        raise KeyboardInterrupt  # after the temporary file is written, before it replaces

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomically(str(path), "new: 2\n" * 1000)
    monkeypatch.undo()
    assert path.read_text() == "old: 1\n" and os.listdir(tmp_path) == ["config.yaml"]
    write_text_atomically(str(path), "new: 2\n" * 1000)
    assert path.read_text() == "new: 2\n" * 1000 and os.listdir(tmp_path) == ["config.yaml"]


def test_metrics_writer_keeps_late_scalars(tmp_path):
    path = tmp_path / "metrics.json"
    writer = run_state.MetricsJSONWriter(str(path))
    with EventStorage(0) as storage:
        for it in range(3):
            storage.iter = it
            storage.put_scalar("loss", float(it))
        writer.write()  # before the checkpoint of iteration 2
        storage.put_scalar("AP", 50.0, smoothing_hint=False)  # evaluation after the checkpoint
        writer.write()
        writer.write()  # nothing new
    writer.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records == [{"iteration": 2, "loss": 1.0}, {"iteration": 2, "AP": 50.0}]


def test_sampler_resumes_at_saved_position():
    stream = list(itertools.islice(iter(TrainingSampler(5, seed=3)), 23))
    sampler = run_state.ResumableSampler(TrainingSampler(5, seed=3))
    assert list(itertools.islice(iter(sampler), 23)) == stream
    trainer = types.SimpleNamespace(iter=5, start_iter=0)
    state = run_state.SamplerCheckpoint(sampler, trainer, batch_size=2).state_dict()
    assert state == {"seed": 3, "position": 12}  # iterations 0..5, 2 images each

    resumed = run_state.ResumableSampler(TrainingSampler(5, seed=99))  # another random seed
    run_state.SamplerCheckpoint(resumed, trainer, 2).load_state_dict(state)
    assert list(itertools.islice(iter(resumed), 11)) == stream[12:]
    trainer.start_iter, trainer.iter = 6, 8  # the resumed run counts on from its position
    assert run_state.SamplerCheckpoint(resumed, trainer, 2).state_dict()["position"] == 18


def _draw():
    return random.random(), float(np.random.rand()), np.random.randn(), float(torch.rand(()))


def test_rng_checkpoint_restores_every_stream_through_a_weights_only_load(tmp_path):
    np.random.randn()  # a cached gaussian is part of numpy's state
    torch.save({"rng": run_state.RNGCheckpoint().state_dict()}, tmp_path / "ckpt.pth")
    expected = _draw()
    state = torch.load(tmp_path / "ckpt.pth", weights_only=True)["rng"]
    run_state.RNGCheckpoint().load_state_dict(state)
    assert _draw() == expected

    with run_state.preserved_rng_states():
        _draw()
    after = _draw()
    run_state.set_rng_states(state)
    _draw()
    assert _draw() == after
