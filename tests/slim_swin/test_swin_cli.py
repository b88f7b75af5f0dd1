"""`vitcompress slim search|extract` and `finetune` on a tiny Swin, end to end (a few images, one epoch)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader, Subset

import vitcompress as vc
import vitcompress.jobs.common as common
from vitcompress.cli import main

SWIN = ["--model", "swin_tiny_patch4_window7_224", "--model-args", "img_size=32", "window_size=4", "embed_dim=16",
        "depths=[2,2]", "num_heads=[2,4]", "num_classes=10"]
FAST = ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "16", "--no-progress"]


@pytest.fixture
def few_digits(monkeypatch):
    """16 training and 16 validation digits instead of the whole set: this tests the wiring, not the learning."""
    real = common.loaders_for

    def loaders_for(*args, **kwargs):
        train, val, info = real(*args, **kwargs)
        small = [DataLoader(Subset(loader.dataset, range(16)), batch_size=16) for loader in (train, val)]
        return small[0], small[1], info

    monkeypatch.setattr(common, "loaders_for", loaders_for)


def test_search_extract_finetune_a_swin(tmp_path, few_digits, capsys):
    search, small, tuned = tmp_path / "search", tmp_path / "x60", tmp_path / "tuned"
    args = ["slim", "search", *SWIN, "--alpha", "0.5", "--mask-lr", "0.01", "--curve-points", "5",
            "-o", str(search), *FAST]
    assert main(args) == 0
    masked = vc.load(search)
    assert any(k.endswith("attn.dim_mask") for k in masked.state_dict())
    assert not any("token" in k for k in masked.state_dict())
    curve = json.loads((search / "curve.json").read_text())
    assert len(curve) == 5 and curve[0]["macs_ratio"] == 1.0 and curve[-1]["macs_ratio"] < 0.5
    assert {"task", "sparsity", "kd_logits", "mask_attn", "mask_mlp"} <= set(json.loads(
        (search / "report.json").read_text())["epochs"][-1])

    assert main(["slim", "extract", "--search", str(search), "--macs", "0.6", "-o", str(small)]) == 0
    assert "original vs extracted" in capsys.readouterr().out
    selection = vc.Selection.from_dict(json.loads((small / "selection.json").read_text()))
    assert 0.594 <= selection.info["macs_ratio"] <= 0.6 and len(selection.info["stage_shares"]["attn"]) == 2
    model = vc.load(small)
    assert vc.count_macs(model, (3, 32, 32)) == selection.info["macs"]

    assert main(["finetune", "--model", str(small), "-o", str(tuned), *FAST]) == 0
    tuned_model = vc.load(tuned)
    assert vc.count_params(tuned_model) == selection.info["params"]
    with torch.no_grad():
        assert tuned_model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_search_refuses_token_masks_on_swin(tmp_path, capsys):
    assert main(["slim", "search", *SWIN, "--tokens", "-o", str(tmp_path / "s"), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "without token masks" in err, err
