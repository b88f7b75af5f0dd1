"""Analytic params and MACs of a slimmed Swin, from its per-owner widths (the Swin twin of `slim.cost`).

MACs per image, as `vitcompress.metrics.count_macs` counts them on the extracted model (matmuls and convs only):
    fixed:      patch-embedding conv + every stage's patch merging (4C_in·C_out per merged token) + classifier
                + depth-wise convs of the multiplexed MLP transformation (C·k²·T)
    layer l:    Tp·C·(3A + A)   qkv + proj on the window-padded map   Tp = nW·N tokens after padding
                2·nW·N²·A       q@kᵀ and attn@v, per window            N = window area, A = attention dims kept
                2·T·C·F         fc1 + fc2 on the unpadded map          T = H·W, F = MLP hidden units kept
                2·H²·nW·N²      head mixing (multiplexed: both H×H mixes, none when A = 0)
Params: qkv/proj/fc1/fc2 at the kept widths, plus the relative-position bias table: one column per kept head
(all H columns with head mixing, where removed heads keep their slot); the rest is fixed. Embedding widths are
never pruned, so patch merging, norms and the head do not change.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch import nn

from vitcompress.metrics.params import count_params
from vitcompress.models.layers import head_dim, transformer_layers
from vitcompress.models.spec import unwrap
from vitcompress.models.swin import padded_size


@dataclasses.dataclass(frozen=True)
class SwinStructure:
    """Widths, window layouts and constants of a (plain, multiplexed or masked) Swin, read once off the model.

    Per layer (execution order over all stages): `owner`, `stage`, `dim`, `tokens`, `padded_tokens`,
    `window_area`, `head_mix`. Per owner (a layer, or a multiplexed group): `heads`, `head_dims`, `hiddens`,
    `table_rows`.
    """

    owner: tuple[int, ...]
    stage: tuple[int, ...]
    dim: tuple[int, ...]
    tokens: tuple[int, ...]
    padded_tokens: tuple[int, ...]
    window_area: tuple[int, ...]
    head_mix: tuple[bool, ...]
    heads: tuple[int, ...]
    head_dims: tuple[int, ...]
    hiddens: tuple[int, ...]
    table_rows: tuple[int, ...]
    qkv_bias: bool
    proj_bias: bool
    fc1_bias: bool
    fc2_bias: bool
    fixed_macs: int
    fixed_params: int

    per_head: ClassVar[bool] = False
    """Swin has no q/k-norm: any subset of a head's dims can be kept."""
    has_tokens: ClassVar[bool] = False
    """No token masks: the paper searched Swin with attention and MLP masks only."""
    num_patches: ClassVar[int] = 0

    @property
    def depth(self) -> int:
        return len(self.owner)

    @property
    def num_owners(self) -> int:
        return max(self.owner) + 1

    @property
    def num_stages(self) -> int:
        return max(self.stage) + 1

    def layers_of(self, owner: int) -> list[int]:
        return [i for i, o in enumerate(self.owner) if o == owner]

    def heads_of(self, owner: int) -> int:
        return self.heads[owner]

    def head_dim_of(self, owner: int) -> int:
        return self.head_dims[owner]

    def hidden_of(self, owner: int) -> int:
        return self.hiddens[owner]

    def owner_mix(self, owner: int) -> bool:
        return any(self.head_mix[i] for i in self.layers_of(owner))

    def full(self) -> tuple[list[int], list[int], list[int]]:
        """(attention dims per owner, hidden units per owner, tokens per layer) of the unslimmed model."""
        return ([h * d for h, d in zip(self.heads, self.head_dims, strict=True)], list(self.hiddens),
                list(self.tokens))

    def layer_macs(self, layer: int, attn_dims: int, hidden: int) -> int:
        """MACs of one layer's linears, window attention and head mixing at the given widths."""
        c, t, tp, n = self.dim[layer], self.tokens[layer], self.padded_tokens[layer], self.window_area[layer]
        macs = 4 * tp * c * attn_dims + 2 * tp * n * attn_dims + 2 * t * c * hidden
        if self.head_mix[layer] and attn_dims:  # no attention dims left: the layer skips attention entirely
            heads = self.heads[self.owner[layer]]
            macs += 2 * heads * heads * n * tp
        return macs

    def owner_params(self, owner: int, attn_dims: int, hidden: int, heads: int) -> int:
        """qkv, proj, fc1, fc2 and bias table of one owner with `heads` heads that keep any dims."""
        c = self.dim[self.layers_of(owner)[0]]
        columns = self.heads[owner] if self.owner_mix(owner) else heads
        return (3 * attn_dims * (c + self.qkv_bias) + attn_dims * c + c * self.proj_bias
                + hidden * (c + self.fc1_bias) + hidden * c + c * self.fc2_bias + self.table_rows[owner] * columns)

    def cost(self, attn_dims: list[int], hidden: list[int], tokens: list[int] | None = None,
             heads: list[int] | None = None) -> tuple[int, int]:
        """(MACs per image, params) of the extracted model from per-owner widths and kept heads (`tokens` is
        ignored: Swin keeps every token; `heads` None: every head kept)."""
        heads = list(self.heads) if heads is None else heads
        macs = self.fixed_macs + sum(self.layer_macs(i, attn_dims[o], hidden[o]) for i, o in enumerate(self.owner))
        params = self.fixed_params + sum(self.owner_params(o, attn_dims[o], hidden[o], heads[o])
                                         for o in range(self.num_owners))
        return int(macs), int(params)

    def element_macs(self) -> dict[str, list[float]]:
        """MACs one mask element controls in the unslimmed model, per owner: an attention dim costs
        Tp·(4C + 2N) in every layer of its owner, an MLP unit 2·T·C."""
        attn = [float(sum(self.padded_tokens[i] * (4 * self.dim[i] + 2 * self.window_area[i])
                          for i in self.layers_of(o))) for o in range(self.num_owners)]
        mlp = [float(sum(2 * self.tokens[i] * self.dim[i] for i in self.layers_of(o))) for o in range(self.num_owners)]
        return {"attn": attn, "mlp": mlp}

    def stage_shares(self, attn_dims: list[int], hidden: list[int]) -> dict[str, list[float]]:
        """Share of each stage's attention dims and MLP units kept, counted per layer (a shared owner counts once
        per layer that uses it, as its MACs do)."""
        full_attn, full_hidden = self.full()[:2]
        out: dict[str, list[float]] = {"attn": [], "mlp": []}
        for s in range(self.num_stages):
            layers = [i for i in range(self.depth) if self.stage[i] == s]
            for key, kept, full in (("attn", attn_dims, full_attn), ("mlp", hidden, full_hidden)):
                out[key].append(sum(kept[self.owner[i]] for i in layers) / sum(full[self.owner[i]] for i in layers))
        return out


def shared_groups(model: nn.Module) -> list[nn.Module] | None:
    """A multiplexed Swin's shared weights in global group order (stage by stage), or None for a plain one."""
    stages = list(unwrap(model).layers)
    if not any(hasattr(stage, "blocks_shared") for stage in stages):
        return None
    return [w for stage in stages for w in getattr(stage, "blocks_shared", [])]


def owner_weights(model: nn.Module, owner: int) -> tuple[nn.Module, ...]:
    """qkv, proj, fc1, fc2 and the module holding the bias table, of one owner (layer or multiplexed group)."""
    shared = shared_groups(model)
    if shared is not None:
        w = shared[owner]
        return w.qkv, w.proj, w.fc1, w.fc2, w
    blk = transformer_layers(model)[owner]
    return blk.attn.qkv, blk.attn.proj, blk.mlp.fc1, blk.mlp.fc2, blk.attn


def swin_structure_of(model: nn.Module) -> SwinStructure:
    """Read the cost-model inputs off a plain, multiplexed or masked timm Swin."""
    model = unwrap(model)
    blocks = transformer_layers(model)
    shared = shared_groups(model)
    owner = tuple(int(blk.group) for blk in blocks) if shared is not None else tuple(range(len(blocks)))
    stage = tuple(s for s, st in enumerate(model.layers) for _ in st.blocks)
    owners = max(owner) + 1
    first = [owner.index(o) for o in range(owners)]
    weights = [owner_weights(model, o) for o in range(owners)]
    variable = sum(p.numel() for ws in weights for lin in ws[:4] for p in lin.parameters())
    variable += sum(ws[4].relative_position_bias_table.numel() for ws in weights)
    masks = sum(p.numel() for n, p in model.named_parameters() if "mask" in n.rsplit(".", 1)[-1])
    padded = [padded_size(tuple(blk.input_resolution), tuple(blk.window_size)) for blk in blocks]
    qkv, proj, fc1, fc2, _ = weights[0]
    return SwinStructure(
        owner=owner,
        stage=stage,
        dim=tuple(int(blk.dim) for blk in blocks),
        tokens=tuple(blk.input_resolution[0] * blk.input_resolution[1] for blk in blocks),
        padded_tokens=tuple(h * w for h, w in padded),
        window_area=tuple(blk.window_size[0] * blk.window_size[1] for blk in blocks),
        head_mix=tuple(getattr(blk.attn, "transform", None) is not None for blk in blocks),
        heads=tuple(int(blocks[i].attn.num_heads) for i in first),
        head_dims=tuple(head_dim(blocks[i].attn) for i in first),
        hiddens=tuple(ws[2].out_features for ws in weights),
        table_rows=tuple(ws[4].relative_position_bias_table.shape[0] for ws in weights),
        qkv_bias=qkv.bias is not None,
        proj_bias=proj.bias is not None,
        fc1_bias=fc1.bias is not None,
        fc2_bias=fc2.bias is not None,
        fixed_macs=_fixed_macs(model, blocks),
        fixed_params=count_params(model) - masks - variable,
    )


def _fixed_macs(model: nn.Module, blocks: list[nn.Module]) -> int:
    pe = model.patch_embed.proj
    gh, gw = model.patch_embed.grid_size
    macs = pe.out_channels * (pe.in_channels // pe.groups) * pe.kernel_size[0] * pe.kernel_size[1] * gh * gw
    for stage in model.layers:
        reduction = getattr(stage.downsample, "reduction", None)
        if reduction is not None:  # PatchMerging: one Linear(4C, C') per merged token
            h, w = stage.output_resolution
            macs += reduction.in_features * reduction.out_features * h * w
    fc = getattr(model.head, "fc", None)
    if isinstance(fc, nn.Linear):
        macs += fc.in_features * fc.out_features
    for blk in blocks:
        transform = getattr(blk, "mlp_transform", None)
        if transform is not None:
            k = transform.conv.kernel_size
            macs += blk.dim * k[0] * k[1] * blk.input_resolution[0] * blk.input_resolution[1]
    return int(macs)
