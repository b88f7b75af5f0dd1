"""`vitcompress export` and `vitcompress profile` across runtimes, end to end; bad input is one line, nothing
written."""

from __future__ import annotations

import re
import sys

import pytest
import timm
import torch
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.cli import main
from vitcompress.export._ort import ort_session

pytest.importorskip("onnxruntime")

TINY = ["--model-args", "img_size=32", "patch_size=8", "embed_dim=32", "depth=2", "num_heads=2", "num_classes=10"]
ERROR = re.compile(r"max \|onnxruntime - torch\| (\S+) at batch 3")


@pytest.fixture(scope="module")
def slim_dir(tmp_path_factory):
    """A saved ViT-Slim model with ragged heads and gathered tokens, as `slim extract -o out/slim60` leaves it."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                              depth=3, num_heads=2, num_classes=10, reg_tokens=2)
    masked = vc.attach_masks(model, vc.SlimConfig(attn=True, mlp=True, tokens=True))
    with torch.no_grad():
        for name, p in masked.named_parameters():
            if name.endswith("mask"):
                p.copy_(torch.rand(p.shape, generator=torch.Generator().manual_seed(len(name))) * 2 - 0.5)
    out = tmp_path_factory.mktemp("cli") / "slim60"
    vc.save(vc.extract(masked, vc.select(masked, macs=0.6)), out)
    return out


@pytest.fixture(scope="module")
def onnx_file(slim_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "slim60.onnx"
    vc.export_onnx(vc.load(slim_dir), path)
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("vitcompress: error: ") and "\n" not in err, err
    return err


def test_export_prints_the_measured_error_and_writes_a_checked_file(slim_dir, tmp_path, capsys):
    out = tmp_path / "deploy" / "slim60.onnx"
    assert main(["export", "--model", str(slim_dir), "--format", "onnx", "-o", str(out)]) == 0
    err = float(ERROR.search(capsys.readouterr().out).group(1))
    assert 0 <= err <= 1e-4
    model, session = vc.load(slim_dir).eval(), ort_session(out)
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_close(torch.from_numpy(session.run(None, {"input": images.numpy()})[0]), model(images),
                     rtol=0, atol=1e-4)


def test_export_options_reach_the_exporter(tmp_path, capsys):
    out = tmp_path / "half.onnx"
    argv = ["export", "--model", "vit_tiny_patch16_224", *TINY, "-o", str(out), "--dtype", "float16", "--opset",
            "15", "--check-batch-size", "2"]
    assert main(argv) == 0
    line = capsys.readouterr().out
    assert "(torchscript exporter, opset 15, float16)" in line and "at batch 2" in line
    assert ort_session(out).get_inputs()[0].type == "tensor(float16)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "tflite"], "unknown export format 'tflite'; the formats are: onnx"),
        (["--dtype", "int8"], "dtype 'int8' is not one of float32, float16"),
        (["--opset", "11"], "opset 11 is not one the TorchScript exporter writes (14-20)"),
        (["--check-batch-size", "1"], "check_batch_size must differ from batch_size (1)"),
    ],
)
def test_export_bad_options(tmp_path, capsys, argv, message):
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", "vit_tiny_patch16_224", *TINY, "-o", str(out), *argv]) == 2
    assert message in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_export_without_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["export", "--model", "vit_tiny_patch16_224", *TINY, "-o", str(tmp_path / "m.onnx")]) == 2
    assert 'pip install -e ".[export]"' in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--model", "{onnx}", "--data", "digits"],
        ["export", "--model", "{onnx}", "-o", "{out}/again.onnx"],
        ["finetune", "--model", "{onnx}", "--data", "digits", "-o", "{out}"],
        ["multiplex", "--teacher", "{onnx}", "-o", "{out}"],
        ["slim", "search", "--model", "{onnx}", "-o", "{out}"],
        ["train", "--model", "{onnx}", "-o", "{out}"],
        ["slim", "extract", "--search", "{onnx}", "--macs", "0.6", "-o", "{out}"],
        ["finetune", "--model", "{slim}", "--kd-teacher", "{onnx}", "--data", "digits", "-o", "{out}"],
        ["profile", "--model", "{onnx}", "--latency", "--runtime", "eager"],
    ],
    ids=["eval", "export", "finetune", "multiplex", "slim-search", "train", "slim-extract", "kd-teacher",
         "profile-eager"],
)
def test_an_onnx_file_where_a_torch_model_is_needed(slim_dir, onnx_file, tmp_path, capsys, argv):
    out = tmp_path / "out"
    assert main([a.format(onnx=onnx_file, out=out, slim=slim_dir) for a in argv]) == 2
    assert "is an ONNX graph" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_an_onnx_file(onnx_file):
    with pytest.raises(vc.VitCompressError, match=r"is an ONNX graph, which only onnxruntime runs"):
        vc.load(onnx_file)


def test_profile_an_onnx_file_at_several_batch_sizes(slim_dir, onnx_file, capsys):
    assert main(["profile", "--model", str(slim_dir)]) == 0
    counts = capsys.readouterr().out.strip()  # params and MACs of the torch model
    assert main(["profile", "--model", str(onnx_file), "--latency", "--batch-size", "1", "3", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, batch in zip(lines, (1, 3), strict=True):
        assert line.startswith(counts + " | latency ")
        assert line.endswith(f"ms (batch {batch}, onnxruntime, 1 thread)")


def test_profile_a_torch_model_in_onnxruntime(slim_dir, tmp_path, capsys):
    argv = ["profile", "--model", str(slim_dir), "--latency", "--runtime", "onnxruntime", "--batch-size", "2"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().endswith("(batch 2, onnxruntime, 1 thread)")


def test_profile_compile_runtime_calls_torch_compile(slim_dir, capsys, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or model)
    assert main(["profile", "--model", str(slim_dir), "--latency", "--runtime", "compile", "--threads", "2"]) == 0
    assert capsys.readouterr().out.strip().endswith("(batch 1, compile, 2 threads)")
    assert len(compiled) == 1


def test_profile_bad_runtime(slim_dir, capsys):
    assert main(["profile", "--model", str(slim_dir), "--latency", "--runtime", "tensorrt"]) == 2
    assert "--runtime tensorrt is not one of eager, compile, onnxruntime" in one_line_error(capsys)


def test_profile_an_onnx_file_at_another_size(onnx_file, capsys):
    assert main(["profile", "--model", str(onnx_file), "--input-size", "3", "64", "64"]) == 2
    assert "does not match the ONNX graph's (3, 32, 32); drop it or pass --input-size 3 32 32" in one_line_error(capsys)


def test_profile_a_missing_onnx_file(tmp_path, capsys):
    assert main(["profile", "--model", str(tmp_path / "nope.onnx")]) == 2
    assert "does not exist" in one_line_error(capsys)
