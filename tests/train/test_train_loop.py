import csv
import json
import math

import pytest
import timm
import torch
from torch import nn
from train_toys import tiny_vit, toy_loader

from vitcompress.errors import VitCompressError
from vitcompress.train import CrossEntropyObjective, TrainConfig, fit

FAST = dict(lr=2e-3, min_lr=1e-5, warmup_epochs=0.25, log_every=1)


def test_loss_decreases_on_a_learnable_problem():
    model, loader = tiny_vit(), toy_loader()
    history = fit(model, loader, loader, CrossEntropyObjective(), TrainConfig(epochs=4, **FAST), None, progress=False)
    losses = history.series("loss")
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]
    assert history.series("val_loss")[-1] < history.series("val_loss")[0]
    assert history[-1]["val_top1"] > 25.0  # 4 classes: better than chance


def test_metrics_files_have_the_expected_keys(tmp_path):
    loader = toy_loader(n=32)
    cfg = TrainConfig(epochs=2, eval_every=2, **FAST)
    history = fit(tiny_vit(), loader, loader, CrossEntropyObjective(), cfg, tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == list(range(1, 5))
    assert {"epoch", "step", "lr", "loss", "ce", "grad_norm", "img_s"} <= steps[0].keys()
    assert {"epoch", "step", "lr", "loss", "ce", "epoch_time_s", "img_s"} <= epochs[0].keys()
    assert "val_top1" not in epochs[0]  # eval_every=2: only the second (and last) epoch is evaluated
    assert {"val_top1", "val_top5", "val_loss", "val_n"} <= epochs[1].keys()
    assert epochs == history.records
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and rows[0]["val_top1"] == "" and float(rows[1]["val_top1"]) >= 0
    assert (tmp_path / "checkpoint" / "step-00000004" / "model.safetensors").is_file()


def test_bf16_autocast_runs_on_cpu():
    loader = toy_loader(n=32)
    history = fit(
        tiny_vit(),
        loader,
        loader,
        CrossEntropyObjective(),
        TrainConfig(epochs=1, amp="bf16", **FAST),
        None,
        progress=False,
    )
    assert math.isfinite(history[-1]["loss"]) and math.isfinite(history[-1]["val_loss"])


def test_fp16_on_cpu_is_a_clear_error():
    with pytest.raises(VitCompressError, match="fp16.*CUDA"):
        fit(
            tiny_vit(),
            toy_loader(n=16),
            None,
            CrossEntropyObjective(),
            TrainConfig(epochs=1, amp="fp16"),
            None,
            device="cpu",
            progress=False,
        )


def test_ema_is_evaluated_and_lags_the_model():
    loader = toy_loader(n=32)
    model = tiny_vit()
    history = fit(
        model,
        loader,
        loader,
        CrossEntropyObjective(),
        TrainConfig(epochs=2, ema_decay=0.9, **FAST),
        None,
        progress=False,
    )
    assert {"val_top1", "val_ema_top1", "val_ema_loss"} <= history[-1].keys()
    ema = history.ema_model
    assert ema is not None and not ema.training
    diff = max((a - b).abs().max().item() for a, b in zip(model.parameters(), ema.parameters(), strict=True))
    assert diff > 0


def test_distilled_deit_tuple_outputs_train_both_heads():
    model = timm.create_model(
        "deit_tiny_distilled_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=1,
        num_heads=2,
        num_classes=4,
    )
    model.set_distilled_training(True)
    loader = toy_loader(n=16)
    assert isinstance(model.train()(loader.dataset.tensors[0][:2]), tuple)  # the case under test
    before = model.head_dist.weight.detach().clone()
    history = fit(
        model,
        loader,
        loader,
        CrossEntropyObjective(label_smoothing=0.1),
        TrainConfig(epochs=1, **FAST),
        None,
        progress=False,
    )
    assert not torch.equal(before, model.head_dist.weight)
    assert math.isfinite(history[-1]["val_top1"])


def test_custom_evaluate_fn_runs_in_eval_mode_without_grad():
    seen = {}

    def evaluate(model, loader):
        seen["training"], seen["grad"] = model.training, torch.is_grad_enabled()
        return {"score": 1}

    model, loader = tiny_vit(), toy_loader(n=16)
    history = fit(
        model,
        loader,
        loader,
        CrossEntropyObjective(),
        TrainConfig(epochs=1, **FAST),
        None,
        evaluate_fn=evaluate,
        progress=False,
    )
    assert history[-1]["val_score"] == 1 and seen == {"training": False, "grad": False}
    assert model.training


def test_masks_get_no_weight_decay_in_fit():
    class WithMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = tiny_vit()
            self.dim_mask = nn.Parameter(torch.ones(3, 3))
            self.unused_weight = nn.Parameter(torch.ones(3, 3))

        def forward(self, x):
            # Zero gradients: any change in these two comes from weight decay alone.
            return self.vit(x) + 0 * (self.dim_mask.sum() + self.unused_weight.sum())

    model = WithMask()
    fit(
        model,
        toy_loader(n=16),
        None,
        CrossEntropyObjective(),
        TrainConfig(epochs=1, weight_decay=0.5, **FAST),
        None,
        progress=False,
    )
    assert torch.equal(model.dim_mask, torch.ones(3, 3))
    assert (model.unused_weight < 1).all()


def test_non_finite_loss_is_a_clear_error():
    def nan_objective(model, images, targets):
        return model(images).sum() * float("nan"), {}

    with pytest.raises(VitCompressError, match="non-finite"):
        fit(
            tiny_vit(),
            toy_loader(n=16),
            None,
            nan_objective,
            TrainConfig(epochs=1, **FAST),
            None,
            progress=False,
        )


def test_existing_checkpoint_needs_resume_or_a_new_dir(tmp_path):
    loader = toy_loader(n=16)
    fit(
        tiny_vit(),
        loader,
        None,
        CrossEntropyObjective(),
        TrainConfig(epochs=1, **FAST),
        tmp_path,
        progress=False,
    )
    with pytest.raises(VitCompressError, match="resume=True"):
        fit(
            tiny_vit(),
            loader,
            None,
            CrossEntropyObjective(),
            TrainConfig(epochs=1, **FAST),
            tmp_path,
            progress=False,
        )


def test_loader_without_batches_is_a_clear_error():
    with pytest.raises(VitCompressError, match="no batches"):
        fit(tiny_vit(), [], None, CrossEntropyObjective(), TrainConfig(epochs=1), None, progress=False)


def test_epoch_sampler_over_a_plain_dataset_is_a_clear_error(tmp_path):
    # EpochSampler yields (index, seed) pairs; a plain dataset would fail on the tuple inside the loader.
    from torch.utils.data import DataLoader

    from vitcompress.data.samplers import EpochSampler

    dataset = toy_loader(n=8).dataset
    loader = DataLoader(dataset, batch_size=4, sampler=EpochSampler(dataset))
    with pytest.raises(VitCompressError, match="SeededDataset") as error:
        fit(tiny_vit(), loader, None, CrossEntropyObjective(), TrainConfig(epochs=1, **FAST), tmp_path, progress=False)
    assert "\n" not in str(error.value) and not any(tmp_path.iterdir())
