from __future__ import annotations

import contextlib

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils import flop_counter

from vitcompress.errors import VitCompressError
from vitcompress.metrics import count_macs, count_macs_by_module

from .conftest import TINY_VIT, set_fused_attn, tiny_swin, tiny_vit


def vit_macs(img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int) -> int:
    """Closed-form MACs of a timm ViT with a class token, MLP ratio 4 and 1000 classes."""
    patches = (img_size // patch_size) ** 2
    n, d = patches + 1, embed_dim
    patch_embed = patches * 3 * patch_size**2 * d
    attn = n * d * 3 * d + 2 * n * n * d + n * d * d  # qkv, q@k^T + attn@v (over all heads), proj
    mlp = 2 * n * d * 4 * d
    return patch_embed + depth * (attn + mlp) + d * 1000


REFERENCE_GMACS = {
    "deit_tiny_patch16_224": 1.25,
    "deit_small_patch16_224": 4.60,
    "deit_base_patch16_224": 17.56,
    "swin_tiny_patch4_window7_224": 4.49,
}


@pytest.mark.parametrize(("name", "expected_gmacs"), REFERENCE_GMACS.items())
def test_reference_models(name: str, expected_gmacs: float) -> None:
    # On the meta device the count comes from shapes alone: no weight init, no compute. The CPU
    # kernels (fused SDPA included) are covered by the tiny-model tests and the slow test below.
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    assert count_macs(model) / 1e9 == pytest.approx(expected_gmacs, abs=0.005)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "expected_gmacs"), REFERENCE_GMACS.items())
def test_reference_models_on_cpu_fused_and_manual(name: str, expected_gmacs: float) -> None:
    model = timm.create_model(name, pretrained=False)
    set_fused_attn(model, True)
    fused_macs = count_macs(model)
    set_fused_attn(model, False)
    assert count_macs(model) == fused_macs
    assert fused_macs / 1e9 == pytest.approx(expected_gmacs, abs=0.005)


def test_tiny_vit_matches_closed_form(vit: nn.Module) -> None:
    assert count_macs(vit, (3, 32, 32)) == vit_macs(**TINY_VIT)


@pytest.mark.parametrize("build", [tiny_vit, tiny_swin], ids=["vit", "swin"])
def test_manual_attention_counts_like_fused(build) -> None:
    # Swin also exercises SDPA with an attn_mask (shifted windows) against the manual masked path.
    fused, manual = build(), build()
    assert set_fused_attn(fused, True) > 0 and set_fused_attn(manual, False) > 0
    assert count_macs(fused, (3, 32, 32)) == count_macs(manual, (3, 32, 32))


def test_deit_tiny_on_cpu_fused_and_manual() -> None:
    # One full-size model through the real CPU kernels in the default run; the rest are `slow`.
    test_reference_models_on_cpu_fused_and_manual(
        "deit_tiny_patch16_224", REFERENCE_GMACS["deit_tiny_patch16_224"]
    )


class HeadMix(nn.Module):
    """Attention-map head mixing as in weight-multiplexed models: (H, H) x (B, H, N, M)."""

    def __init__(self, heads: int, equation: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(heads, heads))
        self.equation = equation

    def forward(self, attn: torch.Tensor) -> torch.Tensor:
        return torch.einsum(self.equation, self.weight, attn)


@pytest.mark.parametrize("equation", ["hg,bgnm->bhnm", "hg,...gnm->...hnm"])
def test_head_mixing_einsum_is_counted(equation: str) -> None:
    heads, tokens, batch = 4, 10, 3
    macs_per_image = count_macs(HeadMix(heads, equation), (heads, tokens, tokens), batch_size=batch)
    assert macs_per_image * batch == heads * heads * tokens * tokens * batch


class SelfAttention(nn.Module):
    """Input (B, heads, tokens, head_dim) used as q, k and v."""

    def __init__(self, mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.mask = mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(x, x, x, attn_mask=self.mask)


@pytest.mark.parametrize(
    "mask",
    [None, torch.zeros(4, 10, 10), torch.ones(10, 10, dtype=torch.bool)],
    ids=["none", "float", "bool"],
)
@pytest.mark.parametrize("backend", [None, SDPBackend.MATH], ids=["default", "math"])
def test_sdpa_counts_both_matmuls(mask: torch.Tensor | None, backend: SDPBackend | None) -> None:
    heads, tokens, head_dim = 4, 10, 8
    with sdpa_kernel(backend) if backend else contextlib.nullcontext():
        macs = count_macs(SelfAttention(mask), (heads, tokens, head_dim))
    assert macs == 2 * heads * tokens * tokens * head_dim


def test_cpu_flash_attention_counted_without_torch_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    # Older torch (2.14 included) has no formula for the CPU flash kernel; our mapping must still count it.
    monkeypatch.delitem(
        flop_counter.flop_registry, torch.ops.aten._scaled_dot_product_flash_attention_for_cpu, raising=False
    )
    assert count_macs(SelfAttention(), (4, 10, 8)) == 2 * 4 * 10 * 10 * 8


def test_mha_fast_path_is_counted() -> None:
    # In eval + no_grad nn.TransformerEncoderLayer runs one fused op FlopCounterMode scores as 0.
    dim, heads, hidden, tokens = 16, 4, 32, 10
    layer = nn.TransformerEncoderLayer(dim, heads, hidden, batch_first=True)
    model = nn.Sequential(nn.Flatten(0, 1), layer)  # (B, 1, N, D) images -> (B, N, D) tokens
    expected = tokens * dim * 4 * dim + 2 * tokens * tokens * dim + 2 * tokens * dim * hidden
    assert count_macs(model, (1, tokens, dim)) == expected
    assert torch.backends.mha.get_fastpath_enabled()


def test_matrix_vector_products_are_counted() -> None:
    class MatVec(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vec = nn.Parameter(torch.randn(6))
            self.mat = nn.Parameter(torch.randn(5, 6))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            flat = x.flatten()
            return flat @ self.vec, self.mat @ flat  # aten.dot, aten.mv

    assert count_macs(MatVec(), (1, 2, 3)) == 6 + 30


def test_batch_size_does_not_change_per_image_macs(vit: nn.Module) -> None:
    assert count_macs(vit, (3, 32, 32), batch_size=3) == count_macs(vit, (3, 32, 32))


def test_meta_model_counts_without_allocating() -> None:
    with torch.device("meta"):
        model = tiny_vit()
    assert count_macs(model, (3, 32, 32)) == vit_macs(**TINY_VIT)


def test_restores_each_module_training_flag(vit: nn.Module) -> None:
    vit.train()
    vit.norm.eval()  # a deliberately frozen submodule must stay frozen
    before = [m.training for m in vit.modules()]
    count_macs(vit, (3, 32, 32))
    assert [m.training for m in vit.modules()] == before


def test_runs_in_model_dtype(vit: nn.Module) -> None:
    assert count_macs(vit.to(torch.bfloat16), (3, 32, 32)) == vit_macs(**TINY_VIT)


def test_by_module_breakdown(vit: nn.Module) -> None:
    macs = count_macs_by_module(vit, (3, 32, 32))
    assert macs[""] == count_macs(vit, (3, 32, 32))
    assert macs["blocks"] == macs["blocks.0"] + macs["blocks.1"]
    n, d = 17, TINY_VIT["embed_dim"]
    assert macs["blocks.0.attn"] == n * d * 3 * d + 2 * n * n * d + n * d * d
    assert list(macs)[:3] == ["", "patch_embed", "patch_embed.proj"]  # named_modules() order


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_bad_batch_size(vit: nn.Module, batch_size) -> None:
    with pytest.raises(VitCompressError, match="batch_size must be a positive int"):
        count_macs(vit, (3, 32, 32), batch_size=batch_size)


def test_wrong_input_size_fails_before_forward(vit: nn.Module) -> None:
    with pytest.raises(VitCompressError, match=r"pass input_size=\(3, 32, 32\)"):
        count_macs(vit)


def test_an_attention_pooling_head_is_counted_and_leaves_requires_grad_alone() -> None:
    # timm's MAP head passes its latent query parameter straight to a Linear, which FlopCounterMode's module tracker
    # cannot hook while it requires grad; counting must work anyway and restore every flag.
    model = timm.create_model("vit_so400m_patch14_siglip_224", pretrained=False, img_size=28, embed_dim=32, depth=1,
                              num_heads=2, mlp_ratio=4, num_classes=3)
    model.blocks[0].norm1.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    pool = count_macs_by_module(model, (3, 28, 28))["attn_pool"]
    assert pool > 0 and count_macs(model, (3, 28, 28)) > pool
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
