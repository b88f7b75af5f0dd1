"""Adapter for timm's SwinTransformer family (Swin-T/S/B/L, S3, any image or window size).

As for ViT, a plain model is described by its registered architecture name plus the constructor arguments read
back from its modules, checked by rebuilding it on the meta device. timm 1.0 layout: `layers[i]` is a stage that
starts with its PatchMerging `downsample` (Identity in stage 0) and carries its `blocks` as (B, H, W, C) maps.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import timm
import torch
from timm.layers import PatchEmbed
from timm.models.swin_transformer import (
    SwinTransformer,
    SwinTransformerBlock,
    SwinTransformerStage,
    WindowAttention,
    window_partition,
)
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models._timm import (
    architecture_name,
    drop_prob,
    patch_embed_kwargs,
    shape_signature,
    verify_rebuild,
)
from vitcompress.models.attention import qkv_bias_parts
from vitcompress.models.family import Family, register_family, unwrap
from vitcompress.models.layers import head_dim, window_layout
from vitcompress.models.mlp import mlp_kind

if TYPE_CHECKING:
    from vitcompress.slim.cost import Structure

FAMILY = "swin"


def check_plain_swin(model: nn.Module, stage_type: type = SwinTransformerStage, block_type: type = SwinTransformerBlock,
                     attn_type: type = WindowAttention) -> None:
    """Refuse layer variants our surgeries do not model (custom stages, blocks, attention or norms); the types are
    Swin V1's unless a Swin V2 model passes its own."""
    if type(model.patch_embed) is not PatchEmbed:
        raise VitCompressError(
            f"patch_embed is {type(model.patch_embed).__name__}; vitcompress needs timm's PatchEmbed"
        )
    for s, stage in enumerate(model.layers):
        if type(stage) is not stage_type:
            raise VitCompressError(f"stage {s} is {type(stage).__name__}, not timm's {stage_type.__name__}")
        for b, blk in enumerate(stage.blocks):
            if type(blk) is not block_type or type(blk.attn) is not attn_type:
                raise VitCompressError(
                    f"stage {s} block {b} is {type(blk).__name__}/{type(getattr(blk, 'attn', None)).__name__}; "
                    f"vitcompress supports timm's {block_type.__name__} with {attn_type.__name__}"
                )
            if type(blk.norm1) is not nn.LayerNorm or type(blk.norm2) is not nn.LayerNorm:
                raise VitCompressError(
                    f"stage {s} block {b} uses {type(blk.norm1).__name__}; only LayerNorm is supported"
                )


def stage_depths(model: SwinTransformer) -> list[int]:
    return [len(stage.blocks) for stage in model.layers]


def per_stage(values: list[Any]) -> Any:
    """One value if every stage has it, else the per-stage list (the forms timm's constructor accepts)."""
    return values[0] if all(v == values[0] for v in values) else values


def describe_swin(model: SwinTransformer) -> dict[str, Any]:
    """Constructor arguments that rebuild `model`'s architecture with `timm.create_model`.

    Window sizes are the ones in use, per stage: timm shrinks a window to a stage's resolution when it is larger
    (and then drops the shift), so a model rebuilt from them has the same windows, shifts and bias tables.
    """
    arch = architecture_name(model)
    check_plain_swin(model)
    firsts = [stage.blocks[0] for stage in model.layers]
    dims = [blk.dim for blk in firsts]
    heads = [blk.attn.num_heads for blk in firsts]
    head_dims = [head_dim(blk.attn) for blk in firsts]
    pe = model.patch_embed
    last = model.layers[-1].blocks[-1]
    kwargs: dict[str, Any] = {
        **patch_embed_kwargs(model),
        "depths": stage_depths(model),
        "num_heads": heads,
        "head_dim": None if all(h * d == c for h, d, c in zip(heads, head_dims, dims, strict=True)) else head_dims,
        "window_size": per_stage([list(blk.window_size) for blk in firsts]),
        "always_partition": bool(firsts[0].always_partition),
        "strict_img_size": bool(pe.strict_img_size),
        "mlp_ratio": per_stage([blk.mlp.fc1.out_features / blk.dim for blk in firsts]),
        "qkv_bias": firsts[0].attn.qkv.bias is not None,
        "drop_rate": float(model.head.drop.p),
        "proj_drop_rate": float(firsts[0].attn.proj_drop.p),
        "attn_drop_rate": float(firsts[0].attn.attn_drop.p),
        "drop_path_rate": drop_prob(last.drop_path1),
    }
    desc = {"family": FAMILY, "architecture": arch, "kwargs": kwargs}
    verify_rebuild(model, desc, lambda d: build_swin(d, init=False), swin_signature)
    return desc


def build_swin(
    desc: dict[str, Any], device: torch.device | str | None = None, init: bool = True
) -> SwinTransformer:
    """Rebuild a randomly initialised model from `describe_swin`'s output (`init=False`: leave weights as allocated)."""
    kwargs = dict(desc["kwargs"]) | ({} if init else {"weight_init": "skip"})
    for key in ("img_size", "patch_size", "depths", "num_heads", "head_dim", "mlp_ratio"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    window = kwargs.get("window_size")
    if isinstance(window, list):  # (h, w) for all stages, or one (h, w) per stage
        kwargs["window_size"] = tuple(tuple(w) if isinstance(w, list) else w for w in window)
    try:
        model = timm.create_model(desc["architecture"], pretrained=False, **kwargs)
    except (AssertionError, RuntimeError, TypeError, ValueError) as e:
        raise VitCompressError(f"cannot rebuild timm model {desc['architecture']!r}: {e}") from e
    return model.to(device) if device is not None else model


def shifted_window_mask(
    height: int, width: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device | None = None
) -> torch.Tensor:
    """Which keys each query of a shifted window may attend to: (num_windows, N, N) bool, True = attend.

    `height`/`width` are the (padded) map size. After the cyclic shift, a window at the border holds tokens from
    up to four regions that were not neighbours; tokens attend only within their own region (timm's region
    labelling, as a boolean mask instead of its additive -100).
    """
    labels = torch.zeros(1, height, width, 1, device=device)
    cnt = 0
    for hs in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for ws in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            labels[:, hs[0]:hs[1], ws[0]:ws[1], :] = cnt
            cnt += 1
    windows = window_partition(labels, window).flatten(1)  # (nW, N)
    return windows.unsqueeze(1) == windows.unsqueeze(2)


def padded_size(resolution: tuple[int, int], window: tuple[int, int]) -> tuple[int, int]:
    return tuple(math.ceil(r / w) * w for r, w in zip(resolution, window, strict=True))


def shared_groups(model: nn.Module) -> list[nn.Module] | None:
    """A multiplexed Swin's shared weights in global group order (stage by stage), or None for a plain one."""
    stages = list(unwrap(model).layers)
    if not any(hasattr(stage, "blocks_shared") for stage in stages):
        return None
    return [w for stage in stages for w in getattr(stage, "blocks_shared", [])]


def swin_structure(model: nn.Module, per_head: bool = False) -> Structure:
    """The slim cost structure (`slim.cost.Structure`) of a plain, multiplexed or masked timm Swin (V1 or V2): per
    stage its width, map and windows (the map padded to whole windows), no prefix tokens and no token masks; every
    stage's patch merging is a fixed cost. `per_head`: heads kept or removed whole (Swin V2)."""
    from vitcompress.slim import cost

    blocks = [blk for stage in model.layers for blk in stage.blocks]
    shared = shared_groups(model)
    owner = tuple(int(blk.group) for blk in blocks) if shared is not None else tuple(range(len(blocks)))
    first = [owner.index(o) for o in range(max(owner) + 1)]
    kind = mlp_kind(blocks[0].mlp)
    holders = [(w, w) for w in shared] if shared is not None else [(blocks[i].attn, blocks[i].mlp) for i in first]
    weights = [cost.owner_weights(attn, mlp, kind) for attn, mlp in holders]
    proj, fc1, fc2 = weights[0]["proj"], weights[0][kind.inputs[0]], weights[0]["fc2"]
    cpb = weights[0].get("cpb_mlp")
    windows = [tuple(blocks[i].window_size) for i in first]
    depth = len(blocks)
    return cost.Structure(
        owner=owner,
        stage=tuple(s for s, stage in enumerate(model.layers) for _ in stage.blocks),
        dim=tuple(int(blk.dim) for blk in blocks),
        tokens=tuple(blk.input_resolution[0] * blk.input_resolution[1] for blk in blocks),
        prefix=(0,) * depth,
        padded_tokens=tuple(math.prod(padded_size(tuple(blk.input_resolution), tuple(blk.window_size)))
                            for blk in blocks),
        window_area=tuple(blk.window_size[0] * blk.window_size[1] for blk in blocks),
        head_mix=tuple(getattr(blk.attn, "transform", None) is not None for blk in blocks),
        conv_kernel=tuple(cost.conv_kernel(blk) for blk in blocks),
        attn_norm=(0,) * depth,
        mlp_norm=(0,) * depth,
        heads=tuple(int(blocks[i].attn.num_heads) for i in first),
        head_dims=tuple(head_dim(blocks[i].attn) for i in first),
        hiddens=tuple(ws["fc2"].in_features for ws in weights),
        table_rows=tuple((2 * h - 1) * (2 * w - 1) for h, w in windows),
        has_tokens=False,
        per_head=per_head,
        qkv_bias=qkv_bias_parts(holders[0][0]),
        proj_bias=proj.bias is not None,
        fc1_bias=fc1.bias is not None,
        fc2_bias=fc2.bias is not None,
        fixed_macs=_fixed_macs(model),
        fixed_params=cost.fixed_params(model, weights, 0),
        mlp_rows=kind.rows_per_unit,
        cpb_hidden=0 if cpb is None else int(cpb[0].out_features),
    )


def _fixed_macs(model: nn.Module) -> int:
    """Patch embedding, every stage's patch merging (one Linear(4C, C') per merged token) and the classifier."""
    from vitcompress.slim.cost import patch_embed_macs

    macs = patch_embed_macs(model)
    for stage in model.layers:
        reduction = getattr(stage.downsample, "reduction", None)
        if reduction is not None:
            h, w = stage.output_resolution
            macs += reduction.in_features * reduction.out_features * h * w
    fc = getattr(model.head, "fc", None)
    if isinstance(fc, nn.Linear):
        macs += fc.in_features * fc.out_features
    return int(macs)


def swin_signature(model: nn.Module) -> list[tuple[Any, ...]]:
    # Shifts and windows change the forward without changing any shape; compare them too.
    layouts = [("layout", s, b, *window_layout(blk)) for s, st in enumerate(model.layers)
               for b, blk in enumerate(st.blocks)]
    return shape_signature(model) + layouts


class SwinFamily(Family):
    name = FAMILY
    supported = "timm SwinTransformer (Swin-T/S/B/L)"
    post_norm = False
    """Swin V2 puts its block norms after the attention and the MLP."""
    per_head = False
    """ViT-Slim keeps heads whole (Swin V2: cosine attention normalises over a head's dims)."""
    stage_type, block_type, attn_type = SwinTransformerStage, SwinTransformerBlock, WindowAttention

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, SwinTransformer)

    def check(self, model: nn.Module) -> None:
        check_plain_swin(model, self.stage_type, self.block_type, self.attn_type)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        return describe_swin(model)

    def build(self, desc: dict[str, Any], init: bool = True) -> nn.Module:
        return build_swin(desc, init=init)

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        return [blk for stage in model.layers for blk in stage.blocks]

    def stage_depths(self, model: nn.Module) -> list[int]:
        return stage_depths(model)

    def multiplex(self, model, config):
        from vitcompress.multiplexing.swin import multiplex_swin

        return multiplex_swin(model, config)

    def check_masks(self, model, config) -> None:
        from vitcompress.slim.swin_masked import check_swin_supported

        check_swin_supported(model, config)

    def attach_masks(self, model, config):
        from vitcompress.slim.swin_masked import attach_swin

        return attach_swin(model, config)

    def is_masked(self, model) -> bool:
        from vitcompress.slim.swin_masked import is_masked_swin

        return is_masked_swin(model)

    def mask_tensors(self, model):
        from vitcompress.slim.swin_masked import swin_mask_tensors

        return swin_mask_tensors(model)

    def structure(self, model):
        return swin_structure(model, self.per_head)

    def apply_selection(self, model, selection) -> None:
        from vitcompress.slim.swin_pruned import apply_swin_selection

        apply_swin_selection(model, selection)


register_family(SwinFamily())
