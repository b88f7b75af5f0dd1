from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.metrics import Profile, count_macs, count_params, profile

from .conftest import tiny_swin, tiny_vit


def test_profile_counts(vit: nn.Module) -> None:
    result = profile(vit, (3, 32, 32))
    assert (result.params, result.macs) == (count_params(vit), count_macs(vit, (3, 32, 32)))
    assert result.latency_ms is None and result.input_size == (3, 32, 32)


def test_profile_with_latency(vit: nn.Module) -> None:
    result = profile(vit, (3, 32, 32), latency=True, batch_size=2)
    assert result.latency_ms > 0
    assert str(result).endswith("ms (batch 2)")


def test_str() -> None:
    result = Profile(params=22_050_664, macs=4_598_882_304, input_size=(3, 224, 224))
    assert str(result) == "params 22.05 M | MACs 4.60 G"
    small = Profile(params=950, macs=12_500, input_size=(3, 8, 8), latency_ms=0.123, batch_size=4)
    assert str(small) == "params 950 | MACs 12.50 K | latency 0.12 ms (batch 4)"


class _Exploding(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("validation must happen before any forward pass")


def _with_exploding_forward(model: nn.Module) -> nn.Module:
    model.register_forward_pre_hook(lambda *_: _Exploding()(None))
    return model


def test_wrong_resolution_names_the_right_one() -> None:
    model = _with_exploding_forward(tiny_vit())
    message = "input_size (3, 64, 64) does not match the model's (3, 32, 32); pass input_size=(3, 32, 32)"
    with pytest.raises(VitCompressError) as error:
        profile(model, (3, 64, 64))
    assert str(error.value) == message


def test_wrong_channels() -> None:
    model = _with_exploding_forward(tiny_vit())
    with pytest.raises(VitCompressError, match=r"has 1 channels .* takes 3; pass input_size=\(3, 32, 32\)"):
        profile(model, (1, 32, 32))


def test_swin_fixed_resolution() -> None:
    with pytest.raises(VitCompressError, match=r"pass input_size=\(3, 32, 32\)"):
        profile(_with_exploding_forward(tiny_swin()), (3, 224, 224))


@pytest.mark.parametrize(
    "build",
    [lambda: tiny_vit(dynamic_img_size=True), lambda: tiny_swin(strict_img_size=False)],
    ids=["vit-dynamic", "swin-not-strict"],
)
def test_flexible_models_accept_other_sizes(build) -> None:
    model = build()
    assert profile(model, (3, 64, 64)).macs > profile(model, (3, 32, 32)).macs


@pytest.mark.parametrize(
    "size", [(224, 224), (3, 0, 32), (3, 32.0, 32), (True, 32, 32), "3x32x32", (3, 32, 32, 1)]
)
def test_malformed_input_size(vit: nn.Module, size) -> None:
    with pytest.raises(VitCompressError, match="input_size must be 3 positive ints"):
        profile(vit, size)


def test_list_input_size_is_accepted(vit: nn.Module) -> None:
    assert profile(vit, [3, 32, 32]).input_size == (3, 32, 32)


def test_import_stays_lean() -> None:
    code = (
        "import sys, vitcompress.metrics; "
        "heavy = {'matplotlib', 'onnx', 'onnxruntime', 'timm', 'pandas'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
