import json

import pytest
import torch
from torch.testing import assert_close
from train_toys import tiny_vit, toy_loader

from vitcompress.errors import VitCompressError
from vitcompress.train import CrossEntropyObjective, TrainConfig, fit, load_checkpoint, save_checkpoint
from vitcompress.train.checkpoint import resolve_checkpoint

CFG = TrainConfig(epochs=3, lr=2e-3, min_lr=1e-4, warmup_epochs=0.5, log_every=1, ema_decay=0.8, seed=7)


class Preempted(Exception):
    pass


class PreemptAfter:
    """Wraps an objective and raises after `steps` calls, like a job killed mid-epoch."""

    def __init__(self, objective, steps):
        self.objective, self.steps = objective, steps

    def __call__(self, model, images, targets):
        if self.steps == 0:
            raise Preempted
        self.steps -= 1
        return self.objective(model, images, targets)


def _steps(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["step"], r["lr"], r["loss"]) for r in records]


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    # Shuffled loader: the data order after resuming must match too, not just the weights.
    loader, val = toy_loader(n=32, batch_size=8), toy_loader(n=16, shuffle=False)
    straight = tiny_vit(seed=0)
    h_straight = fit(straight, loader, val, CrossEntropyObjective(), CFG, tmp_path / "a", progress=False)

    with pytest.raises(Preempted):  # killed two steps into the second epoch
        fit(
            tiny_vit(seed=0),
            loader,
            val,
            PreemptAfter(CrossEntropyObjective(), 6),
            CFG,
            tmp_path / "b",
            progress=False,
        )
    assert load_checkpoint(tmp_path / "b" / "checkpoint").meta["epoch"] == 1
    resumed = tiny_vit(seed=1)  # a different init: the weights must come from the checkpoint
    h_resumed = fit(resumed, loader, val, CrossEntropyObjective(), CFG, tmp_path / "b", resume=True, progress=False)

    assert_close(resumed.state_dict(), straight.state_dict(), rtol=0, atol=0)
    assert_close(h_resumed.ema_model.state_dict(), h_straight.ema_model.state_dict(), rtol=0, atol=0)
    for key in ("step", "lr", "loss", "val_loss", "val_ema_loss"):
        assert h_resumed.series(key) == h_straight.series(key)
    # The interrupted epoch's step records are replaced, not duplicated.
    assert _steps(tmp_path / "b") == _steps(tmp_path / "a")


def test_resume_from_an_explicit_path_and_a_finished_run(tmp_path):
    loader = toy_loader(n=16)
    cfg = TrainConfig(epochs=1, log_every=1)
    model = tiny_vit()
    fit(model, loader, None, CrossEntropyObjective(), cfg, tmp_path / "a", progress=False)
    again = tiny_vit(seed=1)
    history = fit(
        again,
        loader,
        None,
        CrossEntropyObjective(),
        cfg,
        None,
        resume=tmp_path / "a" / "checkpoint",
        progress=False,
    )
    assert len(history) == 1  # nothing left to train: the weights are the checkpoint's
    assert_close(again.state_dict(), model.state_dict(), rtol=0, atol=0)


def test_train_state_loads_without_unpickling_code(tmp_path):
    loader = toy_loader(n=16)
    fit(tiny_vit(), loader, None, CrossEntropyObjective(), TrainConfig(epochs=1), tmp_path, progress=False)
    state = torch.load(resolve_checkpoint(tmp_path / "checkpoint") / "train_state.pt", weights_only=True)
    assert {"optimizer", "scheduler", "scaler", "history"} <= state.keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "metrics.csv", "metrics.jsonl"]


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda d: (d / "train_state.pt").write_bytes(b"not a zip"), "corrupt"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 12), "corrupt"),
        (lambda d: (d / "model.safetensors").unlink(), "incomplete"),
        (lambda d: (d / "meta.json").write_text("{"), "corrupt"),
    ],
)
def test_damaged_checkpoint_is_a_clear_error(tmp_path, damage, match):
    loader = toy_loader(n=16)
    fit(tiny_vit(), loader, None, CrossEntropyObjective(), TrainConfig(epochs=2), tmp_path, progress=False)
    damage(resolve_checkpoint(tmp_path / "checkpoint"))
    with pytest.raises(VitCompressError, match=match):
        fit(
            tiny_vit(),
            loader,
            None,
            CrossEntropyObjective(),
            TrainConfig(epochs=2),
            tmp_path,
            resume=True,
            progress=False,
        )


def test_missing_checkpoint_and_changed_schedule_are_clear_errors(tmp_path):
    loader = toy_loader(n=16)
    with pytest.raises(VitCompressError, match="no checkpoint"):
        fit(
            tiny_vit(),
            loader,
            None,
            CrossEntropyObjective(),
            TrainConfig(epochs=1),
            tmp_path,
            resume=True,
            progress=False,
        )
    fit(tiny_vit(), loader, None, CrossEntropyObjective(), TrainConfig(epochs=1), tmp_path, progress=False)
    with pytest.raises(VitCompressError, match="epochs 1 -> 3"):
        fit(
            tiny_vit(),
            loader,
            None,
            CrossEntropyObjective(),
            TrainConfig(epochs=3),
            tmp_path,
            resume=True,
            progress=False,
        )
    with pytest.raises(VitCompressError, match="do not fit"):
        fit(
            tiny_vit(num_classes=7),
            loader,
            None,
            CrossEntropyObjective(),
            TrainConfig(epochs=1),
            tmp_path,
            resume=True,
            progress=False,
        )


def test_save_is_atomic(tmp_path):
    path = tmp_path / "checkpoint"
    save_checkpoint(path, {"w": torch.ones(2)}, {"history": []}, {"epoch": 1, "step": 1})

    class Boom(Exception):
        pass

    class Unsaveable:
        def __reduce__(self):
            raise Boom

    with pytest.raises(Boom):  # dies while writing the second checkpoint
        save_checkpoint(path, {"w": torch.zeros(2)}, {"bad": Unsaveable()}, {"epoch": 2, "step": 2})
    assert load_checkpoint(path).meta["epoch"] == 1  # the first one is intact ...
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]  # ... and no temp dir is left behind

    (tmp_path / ".checkpoint.tmp-999").mkdir()  # a writer killed mid-save leaves this; the next save clears it
    # A crash between moving the old checkpoint aside and renaming the new one in still leaves one to load.
    path.rename(tmp_path / ".checkpoint.old")
    assert load_checkpoint(path).meta["epoch"] == 1
    save_checkpoint(path, {"w": torch.zeros(2)}, {"history": []}, {"epoch": 2, "step": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]
    assert_close(load_checkpoint(path).model["w"], torch.zeros(2))


def test_shared_tensors_are_reported_not_hidden(tmp_path):
    shared = torch.ones(4)
    with pytest.raises(RuntimeError, match="share memory"):
        save_checkpoint(tmp_path / "c", {"a": shared, "b": shared}, {}, {"epoch": 0, "step": 0})
