"""One latency harness for torch eager, torch.compile and onnxruntime; ONNX graphs in `profile`."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import vitcompress as vc
from vitcompress.errors import VitCompressError
from vitcompress.metrics import measure_latency, profile

pytest.importorskip("onnxruntime")


@pytest.fixture
def graph(vit: nn.Module, tmp_path):
    return vc.export_onnx(vit, tmp_path / "vit.onnx").path


def test_an_onnx_file_runs_in_onnxruntime_with_its_threads(graph, vit) -> None:
    result = measure_latency(graph, (3, 32, 32), batch_size=2, threads=2, min_run_time=0.05)
    assert (result.runtime, result.batch_size, result.threads) == ("onnxruntime", 2, 2)
    assert result.median_ms > 0 and result.iqr_ms >= 0


def test_a_module_is_exported_and_checked_for_onnxruntime(vit, monkeypatch) -> None:
    from vitcompress.export import onnx as onnx_export

    exports = []
    real = onnx_export.export_onnx
    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a, **k: exports.append(k) or real(*a, **k))
    vit.train()
    result = measure_latency(vit, (3, 32, 32), batch_size=2, min_run_time=0.05, runtime="onnxruntime")
    assert result.runtime == "onnxruntime" and result.median_ms > 0
    assert exports == [{"input_size": (3, 32, 32), "check_batch_size": 3}]  # checked at another batch size
    assert vit.training


def test_compile_runtime_compiles_once_and_warms_up_the_compilation(vit, monkeypatch) -> None:
    calls = []

    def fake_compile(model):
        calls.append("compile")
        return lambda x: calls.append("forward") or model(x)

    monkeypatch.setattr(torch, "compile", fake_compile)
    result = measure_latency(vit, (3, 32, 32), min_run_time=0.02, warmup=0, runtime="compile")
    assert result.runtime == "compile"
    assert calls[0] == "compile" and calls.count("compile") == 1
    assert calls.count("forward") > 1  # one untimed pass (the compilation) even with warmup=0, then the timed ones


@pytest.mark.slow
def test_compile_runtime_for_real(vit) -> None:  # inductor compiles for a minute on 2 cores
    assert measure_latency(vit, (3, 32, 32), min_run_time=0.05, runtime="compile").median_ms > 0


def test_eager_stays_the_default(vit) -> None:
    assert measure_latency(vit, (3, 32, 32), min_run_time=0.02, warmup=0).runtime == "eager"


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        ("vit", {"runtime": "tensorrt"}, "runtime 'tensorrt' is not one of eager, compile, onnxruntime"),
        ("graph", {"runtime": "eager"}, "is an ONNX graph: it runs in onnxruntime only, not runtime='eager'"),
        ("graph", {"input_size": (3, 64, 64)}, r"does not match the ONNX graph's \(3, 32, 32\)"),
        ("missing", {}, "does not exist; check the path"),
        ("graph", {"threads": 0}, "threads must be"),
    ],
)
def test_bad_arguments(request, tmp_path, model, kwargs, message) -> None:
    target = tmp_path / "missing.onnx" if model == "missing" else request.getfixturevalue(model)
    kwargs = {"input_size": (3, 32, 32), **kwargs}
    with pytest.raises(VitCompressError, match=message):
        measure_latency(target, min_run_time=0.01, **kwargs)


def test_profile_reads_the_counts_export_recorded(graph, vit) -> None:
    result = profile(graph, (3, 32, 32), latency=True, batch_size=2, threads=1)
    torch_counts = profile(vit, (3, 32, 32))
    assert (result.params, result.macs) == (torch_counts.params, torch_counts.macs)
    assert str(result).startswith(str(torch_counts) + " | latency ")
    assert str(result).endswith("(batch 2, onnxruntime, 1 thread)")


def test_profile_of_a_foreign_graph_says_what_it_cannot_count(vit, tmp_path) -> None:
    path = tmp_path / "foreign.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(vit.eval(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, input_names=["x"])
    result = profile(path, (3, 32, 32))
    assert (result.params, result.macs) == (None, None) and str(result) == "params n/a | MACs n/a"


def test_a_file_that_is_not_onnx(tmp_path) -> None:
    path = tmp_path / "fake.onnx"
    path.write_text("not a graph")
    with pytest.raises(VitCompressError, match="is not a readable ONNX file"):
        profile(path, (3, 32, 32))
