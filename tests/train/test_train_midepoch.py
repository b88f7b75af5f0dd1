"""Checkpoints between any two steps: cadence, pruning, exact mid-epoch resume, accumulation, signals, lr_base."""

import dataclasses
import json
import os
import signal

import pytest
import torch
from torch.testing import assert_close
from torch.utils.data import DataLoader
from train_toys import tiny_vit, toy_dataset, untimed_records

from vitcompress.data.samplers import EpochSampler, SeededDataset
from vitcompress.errors import VitCompressError
from vitcompress.train import CrossEntropyObjective, TrainConfig, fit, load_checkpoint
from vitcompress.train.checkpoint import step_checkpoints
from vitcompress.train.interrupt import TrainingInterrupted

CFG = TrainConfig(epochs=2, lr=2e-3, min_lr=1e-4, warmup_epochs=0.5, log_every=1, ema_decay=0.8, seed=3,
                  checkpoint_every_steps=2, checkpoint_hist=2)


class Noisy(torch.utils.data.Dataset):
    """Draws augmentation noise from the global generator, as timm's transforms do."""

    def __init__(self, n=48):
        self.data = toy_dataset(n)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        image, target = self.data[i]
        return image + 0.1 * torch.randn_like(image), target


def epoch_loader(n=48, batch=8, seed=3):
    data = Noisy(n)
    return DataLoader(SeededDataset(data), batch_size=batch, sampler=EpochSampler(data, seed=seed))


class Preempted(Exception):
    pass


class StopAfter:
    """An objective that raises (like a kill) or sends itself SIGTERM after `steps` calls."""

    def __init__(self, steps, sig=None):
        self.steps, self.sig, self.base = steps, sig, CrossEntropyObjective()

    def __call__(self, model, images, targets):
        if self.steps == 0:
            if self.sig is None:
                raise Preempted
            os.kill(os.getpid(), self.sig)  # handled between steps: this step still completes
        self.steps -= 1
        return self.base(model, images, targets)


def test_mid_epoch_resume_is_bit_exact_with_noisy_data_and_dropout(tmp_path):
    straight = tiny_vit(seed=0, drop_path_rate=0.2)
    h_straight = fit(straight, epoch_loader(), epoch_loader(), CrossEntropyObjective(), CFG, tmp_path / "a",
                     progress=False)
    with pytest.raises(Preempted):  # 6 steps per epoch: dies at step 9, mid-epoch 2, after the step-8 checkpoint
        fit(tiny_vit(seed=0, drop_path_rate=0.2), epoch_loader(), epoch_loader(), StopAfter(9), CFG,
            tmp_path / "b", progress=False)
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoint")
    assert (ckpt.meta["epoch"], ckpt.meta["batches_done"], ckpt.meta["step"]) == (1, 2, 8)
    assert [p.name for p in step_checkpoints(tmp_path / "b" / "checkpoint")] == ["step-00000006", "step-00000008"]
    resumed = tiny_vit(seed=5, drop_path_rate=0.2)  # other init: the weights must come from the checkpoint
    h_resumed = fit(resumed, epoch_loader(), epoch_loader(), CrossEntropyObjective(), CFG, tmp_path / "b",
                    resume=True, progress=False)
    assert_close(resumed.state_dict(), straight.state_dict(), rtol=0, atol=0)
    assert_close(h_resumed.ema_model.state_dict(), h_straight.ema_model.state_dict(), rtol=0, atol=0)
    assert untimed_records(tmp_path / "b") == untimed_records(tmp_path / "a")  # epoch means include the pre-crash steps


def test_workers_give_the_same_run(tmp_path):
    def loader(workers):
        data = Noisy()
        return DataLoader(SeededDataset(data), batch_size=8, sampler=EpochSampler(data, seed=3), num_workers=workers)

    cfg = TrainConfig(epochs=1, log_every=1, seed=3)
    a, b = tiny_vit(seed=0), tiny_vit(seed=0)
    fit(a, loader(0), None, CrossEntropyObjective(), cfg, tmp_path / "a", progress=False)
    fit(b, loader(2), None, CrossEntropyObjective(), cfg, tmp_path / "b", progress=False)
    assert_close(a.state_dict(), b.state_dict(), rtol=0, atol=0)


def test_sigterm_checkpoints_and_raises_one_line(tmp_path):
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM at epoch 1 step 4.*--resume") as info:
        fit(tiny_vit(), epoch_loader(), None, StopAfter(3, signal.SIGTERM), CFG, tmp_path, progress=False)
    assert info.value.exit_code == 128 + signal.SIGTERM and "\n" not in str(info.value)
    assert load_checkpoint(tmp_path / "checkpoint").meta["step"] == 4
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again
    fit(tiny_vit(), epoch_loader(), None, CrossEntropyObjective(), CFG, tmp_path, resume=True, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint").meta["step"] == 12


def test_grad_accumulation_equals_one_big_batch(tmp_path):
    # Dropout-free model, no augmentation noise: 2 micro-batches of 8 are one batch of 16 up to rounding.
    data = SeededDataset(toy_dataset(48))
    cfg = dict(epochs=1, lr=2e-3, warmup_epochs=0, seed=3, clip_grad=None)
    big, small = tiny_vit(seed=0), tiny_vit(seed=0)
    fit(big, DataLoader(data, 16, sampler=EpochSampler(data, seed=3)), None, CrossEntropyObjective(),
        TrainConfig(**cfg), None, progress=False)
    history = fit(small, DataLoader(data, 8, sampler=EpochSampler(data, seed=3)), None, CrossEntropyObjective(),
                  TrainConfig(**cfg, grad_accum_steps=2), None, progress=False)
    assert history[-1]["step"] == 3
    assert_close(small.state_dict(), big.state_dict(), rtol=1e-4, atol=1e-5)


def test_lr_base_scales_with_the_global_batch(tmp_path):
    cfg = TrainConfig(epochs=1, lr_base=5e-4, lr_base_size=512, grad_accum_steps=2, warmup_epochs=0, min_lr=0)
    fit(tiny_vit(), epoch_loader(batch=8), None, CrossEntropyObjective(), cfg, tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoint")
    assert ckpt.meta["lr"] == pytest.approx(5e-4 * 16 / 512)
    assert ckpt.meta["config"]["lr_base"] == 5e-4
    sqrt = TrainConfig(epochs=1, lr_base=5e-4, lr_base_size=512, lr_base_scale="sqrt", warmup_epochs=0, min_lr=0)
    fit(tiny_vit(), epoch_loader(batch=8), None, CrossEntropyObjective(), sqrt, tmp_path / "s", progress=False)
    assert load_checkpoint(tmp_path / "s" / "checkpoint").meta["lr"] == pytest.approx(5e-4 * (8 / 512) ** 0.5)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(seed=4), "training recipe differs .*seed 3 -> 4"),
        (dict(weight_decay=0.1), "training recipe differs .*weight_decay"),
        (dict(grad_accum_steps=2), "lr schedule would change"),
    ],
)
def test_resume_with_another_recipe_is_refused(tmp_path, change, match):
    with pytest.raises(Preempted):
        fit(tiny_vit(), epoch_loader(), None, StopAfter(3), CFG, tmp_path, progress=False)
    cfg = dataclasses.replace(CFG, **change)
    with pytest.raises(VitCompressError, match=match):
        fit(tiny_vit(), epoch_loader(), None, CrossEntropyObjective(), cfg, tmp_path, resume=True, progress=False)


def test_resume_of_another_run_or_world_size_is_refused(tmp_path):
    meta = {"model": {"name": "vit_tiny"}, "augment": {"mixup": 0.0}}
    with pytest.raises(Preempted):
        fit(tiny_vit(), epoch_loader(), None, StopAfter(3), CFG, tmp_path, progress=False, run_meta=meta)
    other = {"model": {"name": "vit_tiny"}, "augment": {"mixup": 0.8}}
    with pytest.raises(VitCompressError, match=r"different run \(augment.mixup 0.0 -> 0.8\)"):
        fit(tiny_vit(), epoch_loader(), None, CrossEntropyObjective(), CFG, tmp_path, resume=True,
            progress=False, run_meta=other)
    path = load_checkpoint(tmp_path / "checkpoint").path
    meta_file = path / "meta.json"
    saved = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**saved, "world_size": 2}))
    with pytest.raises(VitCompressError, match="written by 2 process"):
        fit(tiny_vit(), epoch_loader(), None, CrossEntropyObjective(), CFG, tmp_path, resume=True,
            progress=False, run_meta=meta)
    # What only changes what is logged or saved may differ.
    meta_file.write_text(json.dumps(saved))
    relaxed = dataclasses.replace(CFG, log_every=5, checkpoint_hist=3)
    fit(tiny_vit(), epoch_loader(), None, CrossEntropyObjective(), relaxed, tmp_path, resume=True,
        progress=False, run_meta=meta)


def test_mixup_on_an_odd_batch_is_a_clear_error():
    from timm.data import Mixup

    data = toy_dataset(9)
    mixup = Mixup(mixup_alpha=0.8, num_classes=4)
    with pytest.raises(VitCompressError, match="odd"):
        fit(tiny_vit(), DataLoader(data, 9), None, CrossEntropyObjective(), TrainConfig(epochs=1), None,
            progress=False, mixup=mixup)


def test_bad_train_settings_are_one_line_errors():
    for bad, match in [
        (dict(grad_accum_steps=0), "grad_accum_steps=0"),
        (dict(checkpoint_every_steps=0), "checkpoint_every_steps=0"),
        (dict(checkpoint_hist=0), "checkpoint_hist=0"),
        (dict(lr_base_scale="cube"), "lr_base_scale"),
    ]:
        with pytest.raises(VitCompressError, match=match):
            TrainConfig(**bad)


@pytest.mark.slow
def test_compile_trains_a_multiplexed_student_with_relation_hooks_like_eager():
    # torch.compile of the student, the distillation recorders' forward hooks inside the compiled graph.
    import vitcompress as vc

    data = SeededDataset(toy_dataset(32))
    runs = {}
    for compile in (False, True):
        teacher = tiny_vit(seed=0).eval()
        student = vc.multiplex(teacher, vc.MultiplexConfig(share=2))
        objective = vc.DistillationObjective(student, teacher, vc.DistillConfig(attn_layers="all", hidden_layers="all"))
        history = fit(student, DataLoader(data, 8, sampler=EpochSampler(data)), None, objective,
                      TrainConfig(epochs=1, compile=compile), None, progress=False)
        runs[compile] = (history[-1], student.state_dict())
    assert list(runs[True][1]) == list(runs[False][1])  # no `_orig_mod.` prefix: the raw module is saved
    for key in ("loss", "kd_attn", "kd_hidden", "kd_logits"):
        assert runs[True][0][key] == pytest.approx(runs[False][0][key], rel=1e-4)
    assert_close(runs[True][1], runs[False][1], rtol=1e-4, atol=1e-5)
