"""`vitcompress multiplex --teacher <swin>`: the family-agnostic job runs a Swin end to end."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader, Subset

import vitcompress as vc
import vitcompress.jobs.common as common
from vitcompress.cli import run


@pytest.fixture
def few_digits(monkeypatch):
    """One small training step instead of an epoch of digits, and no latency timing: this tests the wiring."""
    real = common.loaders_for

    def loaders_for(*args, **kwargs):
        train, val, info = real(*args, **kwargs)
        small = [DataLoader(Subset(loader.dataset, range(n)), batch_size=16) for loader, n in ((train, 16), (val, 16))]
        return small[0], small[1], info

    monkeypatch.setattr(common, "loaders_for", loaders_for)
    monkeypatch.setattr(common, "measure_latency", lambda *a, **k: type("L", (), {"median_ms": 0.0})())


def test_cli_multiplexes_a_swin_teacher(tmp_path, few_digits):
    out = tmp_path / "mini-swin"
    report = run([
        "multiplex", "--teacher", "swin_tiny_patch4_window7_224", "--model-args", "img_size=32", "window_size=4",
        "embed_dim=16", "depths=[2,2]", "num_heads=[2,4]", "num_classes=10", "--data", "digits", "--epochs", "1",
        "--share", "stage", "--kernel-size", "3", "--attn-layers", "all", "--hidden-layers", "all", "-o", str(out),
        "--no-progress",
    ])
    assert report["student"]["params (M)"] < report["teacher"]["params (M)"]
    spec = json.loads((out / "spec.json").read_text())["spec"]
    assert spec["base"]["family"] == "swin" and spec["steps"][0]["groups"] == [[0, 1], [2, 3]]
    student = vc.load(out)
    with torch.no_grad():
        assert student(torch.randn(1, 3, 32, 32)).shape == (1, 10)
