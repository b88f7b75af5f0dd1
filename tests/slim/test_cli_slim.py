"""`vitcompress slim search|extract` and `vitcompress finetune` end to end on a tiny model."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import vitcompress as vc
from vitcompress.cli import main

TINY = ["--model-args", "img_size=16", "patch_size=4", "embed_dim=32", "depth=3", "num_heads=2", "num_classes=10"]
FAST = ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "128", "--no-progress"]


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("slim")
    assert main(["train", "--model", "vit_tiny_patch16_224", *TINY, "-o", str(root / "teacher"), *FAST]) == 0
    args = ["slim", "search", "--model", str(root / "teacher"), "--config", "digits-slim", "--curve-points", "5",
            "-o", str(root / "search"), *FAST]
    assert main(args) == 0
    return root


def test_search_writes_masked_model_and_curve(search_dir):
    out = search_dir / "search"
    masked = vc.load(out)
    assert any("token_mask" in k for k in masked.state_dict())
    curve = json.loads((out / "curve.json").read_text())
    assert len(curve) == 5 and curve[0]["macs_ratio"] == 1.0 and curve[-1]["macs_ratio"] < 0.2
    with open(out / "curve.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    report = json.loads((out / "report.json").read_text())
    epoch = report["epochs"][-1]
    assert {"task", "sparsity", "kd_logits", "mask_attn"} <= set(epoch)


def test_search_curve_scores_each_thresholded_model_on_val(search_dir):
    # Zero-cost subnet selection: each curve point's top-1 is its thresholded model's, before any fine-tuning.
    out = search_dir / "search"
    curve = json.loads((out / "curve.json").read_text())
    assert curve[-1]["share"] == 0 and curve[-1]["top1"] is None
    masked = vc.load(out)
    _, val, _ = vc.build_loaders("digits", input_size=(3, 16, 16), batch_size=128)
    for row in (curve[1], curve[3]):
        selection = vc.select(masked, dims={"attn": row["share"], "mlp": row["share"], "tokens": row["share"]})
        assert vc.evaluate(vc.binarize(masked, selection), val)["top1"] == row["top1"]
    assert curve[0]["top1"] == json.loads((out / "report.json").read_text())["masked_val"]["top1"]


def test_extract_then_finetune_with_kd(search_dir, capsys):
    out, tuned = search_dir / "x60", search_dir / "tuned"
    assert main(["slim", "extract", "--search", str(search_dir / "search"), "--macs", "0.6", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "original vs extracted" in printed and "Top-1 before fine-tuning ≈" in printed
    small = vc.load(out)
    selection = vc.Selection.from_dict(json.loads((out / "selection.json").read_text()))
    assert 0.55 < selection.info["macs_ratio"] <= 0.6
    curve = json.loads((search_dir / "search" / "curve.json").read_text())
    around = [r["top1"] for r in curve if r["top1"] is not None]
    expected = json.loads((out / "report.json").read_text())["expected_top1_before_finetune"]
    assert min(around) <= expected <= max(around)
    assert vc.count_macs(small, (3, 16, 16)) == selection.info["macs"]
    args = ["finetune", "--model", str(out), "--kd-teacher", str(search_dir / "teacher"), "-o", str(tuned), *FAST]
    assert main(args) == 0
    report = json.loads((tuned / "report.json").read_text())
    assert "kd_logits" in report["epochs"][-1] and report["kd_teacher"]
    tuned_model = vc.load(tuned)
    assert vc.count_params(tuned_model) == vc.count_params(small)
    assert torch.isfinite(torch.tensor(report["val"]["top1"]))


def test_extract_by_dims_and_joint(search_dir, tmp_path):
    assert main(["slim", "extract", "--search", str(search_dir / "search"), "--dims", "attn=0.5", "mlp=0.5",
                 "-o", str(tmp_path / "d")]) == 0
    assert main(["slim", "extract", "--search", str(search_dir / "search"), "--params", "0.7", "--mode", "joint",
                 "-o", str(tmp_path / "j")]) == 0
    assert vc.load(tmp_path / "j") is not None


def test_extract_with_equal_heads(search_dir, tmp_path):
    out = tmp_path / "eq"
    assert main(["slim", "extract", "--search", str(search_dir / "search"), "--dims", "attn=0.3", "--equal-heads",
                 "-o", str(out)]) == 0
    selection = vc.Selection.from_dict(json.loads((out / "selection.json").read_text()))
    assert selection.info["equal_heads"]
    assert all(len({len(h) for h in layer}) == 1 for layer in selection.attn)
    assert all(len(blk.attn.groups) == 1 for blk in vc.load(out).blocks)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--macs", "0.001"], "out of reach"),
        (["--macs", "1.5"], "(0, 1]"),
        (["--dims", "heads=0.5"], "unknown"),
        (["--dims", "attn"], "TYPE=SHARE"),
    ],
    ids=["unreachable", "above-one", "unknown-type", "malformed-dims"],
)
def test_extract_bad_budgets_one_line(search_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "bad"
    assert main(["slim", "extract", "--search", str(search_dir / "search"), *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not out.exists()


def test_extract_with_latency_prints_the_report(search_dir, tmp_path, capsys, monkeypatch):
    import types

    import vitcompress.jobs.slim as slim_jobs

    timed = []  # a stand-in timer: the flag must reach the job, the timing itself is the metrics tests' business
    monkeypatch.setattr(slim_jobs, "measure_latency",
                        lambda net, size, batch_size: timed.append(batch_size) or types.SimpleNamespace(median_ms=1.5))
    out = tmp_path / "lat"
    capsys.readouterr()
    assert main(["slim", "extract", "--search", str(search_dir / "search"), "--params", "0.8", "--mode", "joint",
                 "--latency", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == (out / "report.md").read_text().strip()
    assert "original vs extracted" in printed and "CPU latency b32 (ms)" in printed
    assert timed == [1, 32, 1, 32]
    report = json.loads((out / "report.json").read_text())
    assert report["selection"]["mode"] == "joint" and report["selection"]["params_ratio"] <= 0.8
    assert not report["selection"].get("equal_heads")  # the signature's default, not argparse's


@pytest.mark.parametrize("argv", [["--macs", "0.5", "--dims", "attn=0.5"], []], ids=["two", "none"])
def test_extract_needs_exactly_one_budget(search_dir, tmp_path, capsys, argv):
    with pytest.raises(SystemExit):
        main(["slim", "extract", "--search", str(search_dir / "search"), *argv, "-o", str(tmp_path / "o")])
    assert "--macs" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists()


def test_extract_needs_a_search_dir(search_dir, tmp_path, capsys):
    assert main(["slim", "extract", "--search", str(search_dir / "teacher"), "--macs", "0.5",
                 "-o", str(tmp_path / "o")]) == 2
    assert "no masked model" in capsys.readouterr().err


def test_slim_recipe_validates():
    from vitcompress.cli_args import job_kwargs, load_recipe
    from vitcompress.jobs.slim import search_job

    kwargs = job_kwargs(search_job, load_recipe("digits-slim"), {"model": "m", "out": "o"})
    assert kwargs["sparsity"].l1_attn == 2e-4 and kwargs["kd"].alpha == 0.5 and kwargs["slim"].tokens


def test_version_1_sparsity_names_still_load():
    """Old recipes (attn_weight, kd_alpha) and saved extras (SparsityConfig version 1) keep working."""
    from vitcompress.cli_args import job_kwargs
    from vitcompress.jobs.slim import search_job

    kwargs = job_kwargs(search_job, {"attn_weight": 1e-3, "tokens_weight": 0.0, "kd_alpha": 0.3},
                        {"model": "m", "out": "o"})
    assert kwargs["sparsity"].l1_attn == 1e-3 and kwargs["sparsity"].l1_tokens == 0.0 and kwargs["kd"].alpha == 0.3
    old = vc.SparsityConfig.from_dict({"attn_weight": 1e-3, "mlp_weight": 2e-5, "version": 1})
    assert (old.l1_attn, old.l1_mlp) == (1e-3, 2e-5) and old.to_dict()["version"] == 2


def test_every_run_writes_its_figures_into_its_report(search_dir, tmp_path, capsys):
    search = search_dir / "search"
    for png in ("losses.png", "accuracy.png", "masks.png", "kept_per_layer.png"):
        assert (search / png).stat().st_size > 0 and f"]({png})" in (search / "report.md").read_text()
    assert (search_dir / "teacher" / "losses.png").is_file()
    out = tmp_path / "x50"
    assert main(["slim", "extract", "--search", str(search), "--macs", "0.5", "-o", str(out)]) == 0
    selection = vc.Selection.from_dict(json.loads((out / "selection.json").read_text()))
    text = (out / "report.md").read_text()
    for i, heads in enumerate(selection.attn):  # the per-layer table: kept attention dims of 32, MLP units of 128
        dims, units = sum(map(len, heads)), len(selection.mlp[i])
        assert f"| {i}     | {sum(1 for h in heads if h)}/2   | {dims}/32" in text and f"{units}/128" in text
    # `vitcompress report` redraws: still one plots section
    assert main(["report", str(out)]) == 0 and (out / "report.md").read_text().count("## Plots") == 1


def test_report_without_matplotlib_says_how_to_get_plots(search_dir, tmp_path, monkeypatch):
    import shutil

    import vitcompress.report.run as run

    run_dir = tmp_path / "teacher"
    shutil.copytree(search_dir / "teacher", run_dir)
    for png in run_dir.glob("*.png"):
        png.unlink()
    monkeypatch.setattr(run, "pyplot", lambda: None)
    assert run.render_run(run_dir) == []
    assert not list(run_dir.glob("*.png"))
    assert "Plots not drawn: matplotlib is not installed (pip install matplotlib" in (run_dir / "report.md").read_text()


def test_report_of_a_directory_that_is_no_run_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a run directory" in err
