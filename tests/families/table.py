"""The one table of tiny models the method checks run on: a row per family (FAMILIES) and named variants.

Every FAMILIES row is a registered timm name built with `pretrained=False` at a tiny size (depth 2, or two stages
of two blocks). The variants add what some checks need besides: the ViT family's token layouts and block kinds
(VIT_VARIANTS, also the `make_vit` fixture's table) and Swin window layouts (SWIN_LAYOUTS). `build` makes any row;
adding a family is one FAMILIES row.
"""

from __future__ import annotations

import copy

import timm
import torch
from torch import nn

import vitcompress as vc
from vitcompress.models.layers import num_prefix_tokens, transformer_layers, window_layout
from vitcompress.models.spec import SPEC_ATTR, describe_base

TINY = dict(embed_dim=64, num_heads=4, depth=2, num_classes=5)
SWIN = dict(img_size=64, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4, num_classes=5)
# name -> (family, constructor arguments); every row keeps its family's features
FAMILIES = {
    "vit_base_patch16_224": ("vit", dict(img_size=64, **TINY)),
    "swin_tiny_patch4_window7_224": ("swin", SWIN),
    # Swin V2: cosine attention, continuous position bias, post-norm, q/v biases; and pretrained-window scaling
    "swinv2_tiny_window8_256": ("swin_v2", SWIN),
    # ... and heads of different widths per stage (8 then 16 dims): whole-head costs are per stage
    "swinv2_base_window12to16_192to256": ("swin_v2", dict(SWIN, num_heads=(2, 2))),
    # EVA-02: fused qkv with separate q/v biases, packed SwiGLU (GluMlp), rotary (interleaved), avg pool
    "eva02_tiny_patch14_224.mim_in22k": ("eva", dict(img_size=56, **TINY)),
    # DINOv3: 4 register tokens, half-split rotary (rotate_half), LayerScale
    "vit_small_patch16_dinov3": ("eva", dict(img_size=64, **TINY)),
    # RoPE ViT: timm's AttentionRope, class token
    "vit_base_patch16_rope_224": ("eva", dict(img_size=64, **TINY)),
    # mixed RoPE: one rotary table per layer and head
    "vit_base_patch16_rope_mixed_224": ("eva", dict(img_size=64, **TINY)),
    # Perception Encoder: attention-pooling (MAP) head, a fixed cost for ViT-Slim
    "vit_pe_core_tiny_patch16_384": ("eva", dict(img_size=64, **TINY)),
    # Norms inside the layers, over all attention dims / MLP units: BEiT-3 (scale_attn_norm, scale_mlp_norm),
    # EVA-02 CLIP (scale_attn_inner, scale_mlp); slimming slices them exactly (models/sliced_norm.py)
    "beit3_base_patch16_224": ("vit", dict(img_size=64, **TINY)),
    "eva02_base_patch16_clip_224": ("eva", dict(img_size=64, **TINY)),
}

# ViT variants, each one token layout or block option of timm's VisionTransformer, all at 32×32 images in 8×8
# patches (a 4×4 grid): name -> (timm architecture, overrides of VIT_TINY)
VIT_TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10)
VIT_VARIANTS: dict[str, tuple[str, dict]] = {
    "vit": ("vit_tiny_patch16_224", {}),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(embed_dim=48, num_heads=3)),
    "deit3_layerscale": ("deit3_small_patch16_224", dict(embed_dim=64, num_heads=4, depth=2)),
    "reg4_gap_fc_norm": ("vit_base_patch16_reg4_gap_256", {}),
    "reg_tokens": ("vit_tiny_patch16_224", dict(reg_tokens=4, depth=4)),
    "avg_pool_no_cls": ("vit_tiny_patch16_224", dict(class_token=False, global_pool="avg")),
    "qk_norm": ("vit_tiny_patch16_224", dict(qk_norm=True, embed_dim=64, num_heads=4, depth=2)),
    # Gated MLPs: AIMv2's SwiGLU (separate gate/value linears, RMSNorm, no biases; its final norm moved after the
    # average pool, fc_norm, so token masks apply) and DINOv2-g's packed GluMlp.
    "swiglu": ("aimv2_large_patch14_224", dict(fc_norm=True)),
    "glu_packed": ("vit_giant_patch14_dinov2", dict(mlp_ratio=2.66667 * 2)),
    # Residual post-norm blocks (timm's ResPostBlock), average pooling without a class token.
    "res_post": ("vit_base_patch16_rpn_224", {}),
}

# Swin window layouts, all with shifted windows
_SWIN_BASE = dict(patch_size=4, num_classes=10)
SWIN_LAYOUTS: dict[str, dict] = {
    # 16x16 then 8x8 maps, window 4: the odd layers of both stages are shifted; stage 2 has 4 layers.
    "swin_w4_64": dict(img_size=64, window_size=4, embed_dim=24, depths=(2, 4), num_heads=(2, 4), **_SWIN_BASE),
    # 14x14 then 7x7 maps, window 7: stage 2 is one window, so timm does not shift it.
    "swin_w7_56": dict(img_size=56, window_size=7, embed_dim=32, depths=(2, 2), num_heads=(2, 4), **_SWIN_BASE),
    # 14x14 then 7x7 maps, window 7, always_partition: stage 2 is one window and still shifted (masked).
    "swin_w7_56_always": dict(img_size=56, window_size=7, embed_dim=16, depths=(2, 2), num_heads=(2, 4),
                              always_partition=True, **_SWIN_BASE),
    # 10x10 then 5x5 maps, window 4: both padded to whole windows; head_dim 12, so the attention width is not C.
    "swin_w4_40_pad": dict(img_size=40, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), head_dim=12,
                           **_SWIN_BASE),
}

ROWS: dict[str, tuple[str, str, dict]] = {
    **{name: (family, name, kwargs) for name, (family, kwargs) in FAMILIES.items()},
    **{name: ("vit", arch, {**VIT_TINY, **kwargs}) for name, (arch, kwargs) in VIT_VARIANTS.items()},
    **{name: ("swin", "swin_tiny_patch4_window7_224", kwargs) for name, kwargs in SWIN_LAYOUTS.items()},
}
"""Every row: name -> (family, timm architecture, constructor arguments)."""


def perturb_(model: nn.Module, scale: float = 0.05, seed: int = 2) -> nn.Module:
    """Add seeded noise to every parameter, so identity-initialised transforms stop being identities."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model


def build_vit(variant: str = "vit", seed: int = 0, **overrides) -> nn.Module:
    """A tiny, randomly initialised (seeded) timm model of the ViT `variant`, in eval mode."""
    arch, variant_overrides = VIT_VARIANTS[variant]
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, **{**VIT_TINY, **variant_overrides, **overrides})
    return model.eval()


_BUILT: dict[str, nn.Module] = {}


def build(name: str, seed: int = 0, **overrides) -> nn.Module:
    """Row `name` of the table (constructor arguments updated by `overrides`), seeded, with every weight moved off
    its initial value so that biases, LayerScale, logit scales and norms are not identities; in eval mode.

    Each model is built and described once; every call gets a fresh copy. Timm's weight init is most of a tiny
    test's time, and so is reading a plain model's description, which rebuilds it on the meta device to check it:
    every surgery reads it again (test_families checks the description itself, on a model without one)."""
    key = repr((name, seed, sorted(overrides.items())))
    if key not in _BUILT:
        _, arch, kwargs = ROWS[name]
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=False, **{**kwargs, **overrides})
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
        setattr(model, SPEC_ATTR, {"base": describe_base(model), "steps": []})
        _BUILT[key] = model
    return copy.deepcopy(_BUILT[key]).eval()


def family_name(name: str) -> str:
    return ROWS[name][0]


def deepest_stage(name: str, depth: int = 4) -> dict:
    """Overrides that give row `name` a stage of `depth` layers (its last one, for a Swin)."""
    kwargs = ROWS[name][2]
    return dict(depths=(*kwargs["depths"][:-1], depth)) if "depths" in kwargs else dict(depth=depth)


def images(model: nn.Module, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *model.patch_embed.img_size, generator=torch.Generator().manual_seed(3))


def size_of(model: nn.Module) -> tuple[int, int, int]:
    return (3, *model.patch_embed.img_size)


def randomize_masks(masked: nn.Module) -> nn.Module:
    """Seeded mask values as a search might leave them: attn/mlp in [-0.5, 1.5), token θ in [-1, 5)."""
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, p in masked.named_parameters():
            if name.endswith("token_mask"):
                p.copy_(torch.rand(p.shape, generator=gen) * 6 - 1)
            elif name.endswith("_mask"):
                p.copy_(torch.rand(p.shape, generator=gen) * 2 - 0.5)
    return masked


# -- what MiniViT shares, and what its transformations cost, written out independently of the library --------------

def shared_param_names(block: nn.Module) -> list[str]:
    """Parameters of a plain block that a sharing group holds once: every weight of its attention and MLP
    (projections, biases, Swin's bias table, Swin V2's position-bias MLP and logit scales) but the norms inside
    them (q/k norms, BEiT-3's and EVA-02 CLIP's inner norms), which stay per layer like the block's own norms."""
    return [name for name, _ in block.named_parameters()
            if name.split(".")[0] in ("attn", "mlp") and not any(p.endswith("norm") for p in name.split(".")[1:-1])]


def layer_width(block: nn.Module) -> int:
    return int(block.norm1.weight.shape[0])


def transform_params(teacher: nn.Module, config: vc.MultiplexConfig) -> int:
    """Per layer: two H×H head mixes (pre, post); the DW-conv's LayerNorm (w, b), k×k depth-wise kernel and bias."""
    total = 0
    for blk in transformer_layers(teacher):
        heads, dim = blk.attn.num_heads, layer_width(blk)
        total += (2 * heads * heads if config.attn_transform else 0) + (
            2 * dim + config.kernel_size**2 * dim + dim if config.mlp_transform else 0)
    return total


def expected_multiplexed_params(teacher: nn.Module, groups: list[list[int]], config: vc.MultiplexConfig) -> int:
    """Teacher params − (k−1)·shared weights per group of k layers + each layer's transformations."""
    blocks = transformer_layers(teacher)
    shared = [sum(blk.get_parameter(n).numel() for n in shared_param_names(blk)) for blk in blocks]
    saving = sum((len(g) - 1) * shared[g[0]] for g in groups)
    return sum(p.numel() for p in teacher.parameters()) - saving + transform_params(teacher, config)


def transform_macs(teacher: nn.Module, kernel_size: int) -> int:
    """Per layer: two H×H head mixes of every (padded) window's N×N attention map, each output element summing over
    H heads (a ViT is one window of prefix + patch tokens); one k×k depth-wise conv over the C-channel patch map
    (zero padding counted, as every counter does)."""
    total = 0
    for blk in transformer_layers(teacher):
        heads, dim = blk.attn.num_heads, layer_width(blk)
        layout = window_layout(blk)
        if layout is None:
            grid = teacher.patch_embed.grid_size[0] * teacher.patch_embed.grid_size[1]
            windows, tokens, patches = 1, num_prefix_tokens(teacher) + grid, grid
        else:
            (h, w), (wh, ww), _ = layout
            windows, tokens, patches = -(-h // wh) * -(-w // ww), wh * ww, h * w
        total += 2 * heads * heads * windows * tokens**2 + kernel_size**2 * dim * patches
    return total
