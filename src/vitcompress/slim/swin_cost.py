"""Analytic params and MACs of a slimmed Swin, from its per-owner widths (the Swin twin of `slim.cost`).

MACs per image, as `vitcompress.metrics.count_macs` counts them on the extracted model (matmuls and convs only):
    fixed:      patch-embedding conv + every stage's patch merging (4C_in·C_out per merged token) + classifier
                + depth-wise convs of the multiplexed MLP transformation (C·k²·T)
    layer l:    Tp·C·(3A + A)   qkv + proj on the window-padded map   Tp = nW·N tokens after padding
                2·nW·N²·A       q@kᵀ and attn@v, per window            N = window area, A = attention dims kept
                (1+r)·T·C·F     MLP linears on the unpadded map        T = H·W, F = MLP hidden units kept,
                                                                       r = input rows per unit (2 if gated)
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
from vitcompress.models.attention import attention_weights, qkv_bias_parts
from vitcompress.models.family import family_of
from vitcompress.models.layers import head_dim, is_mask_param, transformer_layers
from vitcompress.models.mlp import mlp_kind
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
    qkv_bias: int
    """How many of q, k and v have a bias (3 or 0)."""
    proj_bias: bool
    fc1_bias: bool
    fc2_bias: bool
    fixed_macs: int
    fixed_params: int
    mlp_rows: int = 1
    """Input-linear rows per MLP hidden unit: 1 (fc1), or 2 for gated MLPs (gate and value)."""
    cpb_hidden: int = 0
    """Swin V2: hidden width of the continuous position-bias MLP (2 -> hidden -> heads), run by every layer on
    its window's relative coordinates; 0 for Swin's learned table."""
    per_head: bool = False
    """Heads kept or removed whole (Swin V2's cosine attention normalises over all of a head's dims)."""
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

    def layer_macs(self, layer: int, attn_dims: int, hidden: int, heads: int | None = None) -> int:
        """MACs of one layer's linears, window attention, head mixing and position-bias MLP at the given widths
        (`heads`: heads that keep any dims, None: all)."""
        c, t, tp, n = self.dim[layer], self.tokens[layer], self.padded_tokens[layer], self.window_area[layer]
        macs = 4 * tp * c * attn_dims + 2 * tp * n * attn_dims + (1 + self.mlp_rows) * t * c * hidden
        owner = self.owner[layer]
        if self.head_mix[layer] and attn_dims:  # no attention dims left: the layer skips attention entirely
            macs += 2 * self.heads[owner] * self.heads[owner] * n * tp
        if self.cpb_hidden and attn_dims:
            h = self.cpb_hidden
            macs += self.table_rows[owner] * (2 * h + h * self.bias_columns(owner, heads))
        return macs

    def bias_columns(self, owner: int, heads: int | None) -> int:
        """Position-bias columns the owner keeps: one per kept head, or all of them with head mixing."""
        return self.heads[owner] if heads is None or self.owner_mix(owner) else heads

    def owner_params(self, owner: int, attn_dims: int, hidden: int, heads: int) -> int:
        """qkv, proj, MLP and position bias (table, or V2's MLP and logit scales) of one owner with `heads` heads
        that keep any dims."""
        c = self.dim[self.layers_of(owner)[0]]
        columns = self.bias_columns(owner, heads)
        if self.cpb_hidden:  # Linear(2, h) with bias, Linear(h, columns) without; one logit scale per kept head
            bias_params = 3 * self.cpb_hidden + self.cpb_hidden * columns + heads
        else:
            bias_params = self.table_rows[owner] * columns
        return (3 * attn_dims * c + attn_dims * self.qkv_bias + attn_dims * c + c * self.proj_bias
                + hidden * self.mlp_rows * (c + self.fc1_bias) + hidden * c + c * self.fc2_bias + bias_params)

    def cost(self, attn_dims: list[int], hidden: list[int], tokens: list[int] | None = None,
             heads: list[int] | None = None) -> tuple[int, int]:
        """(MACs per image, params) of the extracted model from per-owner widths and kept heads (`tokens` is
        ignored: Swin keeps every token; `heads` None: every head kept)."""
        heads = list(self.heads) if heads is None else heads
        macs = self.fixed_macs + sum(self.layer_macs(i, attn_dims[o], hidden[o], heads[o])
                                     for i, o in enumerate(self.owner))
        params = self.fixed_params + sum(self.owner_params(o, attn_dims[o], hidden[o], heads[o])
                                         for o in range(self.num_owners))
        return int(macs), int(params)

    def element_macs(self) -> dict[str, list[float]]:
        """MACs one mask element controls in the unslimmed model, per owner: an attention dim costs
        Tp·(4C + 2N) in every layer of its owner, an MLP unit (1+r)·T·C."""
        attn = [float(sum(self.padded_tokens[i] * (4 * self.dim[i] + 2 * self.window_area[i])
                          for i in self.layers_of(o))) * (self.head_dims[o] if self.per_head else 1)
                for o in range(self.num_owners)]
        mlp = [float(sum((1 + self.mlp_rows) * self.tokens[i] * self.dim[i] for i in self.layers_of(o)))
               for o in range(self.num_owners)]
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


def owner_weights(model: nn.Module, owner: int) -> dict[str, nn.Module | nn.Parameter]:
    """The attention weights (`attention_weights`: projections, biases, bias table or position-bias MLP, logit
    scales) and MLP linears of one owner: a layer's own, or its multiplexed group's."""
    kind = mlp_kind(transformer_layers(model)[0].mlp)
    shared = shared_groups(model)
    if shared is not None:
        attn = mlp = shared[owner]
    else:
        blk = transformer_layers(model)[owner]
        attn, mlp = blk.attn, blk.mlp
    return {**attention_weights(attn), **{name: getattr(mlp, name) for name in kind.linears}}


def _numel(weights: nn.Module | nn.Parameter) -> int:
    return weights.numel() if isinstance(weights, nn.Parameter) else sum(p.numel() for p in weights.parameters())


def swin_structure_of(model: nn.Module) -> SwinStructure:
    """Read the cost-model inputs off a plain, multiplexed or masked timm Swin (V1 or V2)."""
    model = unwrap(model)
    blocks = transformer_layers(model)
    shared = shared_groups(model)
    owner = tuple(int(blk.group) for blk in blocks) if shared is not None else tuple(range(len(blocks)))
    stage = tuple(s for s, st in enumerate(model.layers) for _ in st.blocks)
    owners = max(owner) + 1
    first = [owner.index(o) for o in range(owners)]
    weights = [owner_weights(model, o) for o in range(owners)]
    variable = sum(_numel(w) for ws in weights for w in ws.values())
    masks = sum(p.numel() for n, p in model.named_parameters() if is_mask_param(n))
    padded = [padded_size(tuple(blk.input_resolution), tuple(blk.window_size)) for blk in blocks]
    kind = mlp_kind(blocks[0].mlp)
    linears = weights[0]
    proj, fc1, fc2 = linears["proj"], linears[kind.inputs[0]], linears["fc2"]
    cpb = linears.get("cpb_mlp")
    windows = [tuple(blocks[i].window_size) for i in first]
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
        hiddens=tuple(ws["fc2"].in_features for ws in weights),
        table_rows=tuple((2 * h - 1) * (2 * w - 1) for h, w in windows),
        qkv_bias=qkv_bias_parts(linears_holder(model, blocks)),
        proj_bias=proj.bias is not None,
        fc1_bias=fc1.bias is not None,
        fc2_bias=fc2.bias is not None,
        fixed_macs=_fixed_macs(model, blocks),
        fixed_params=count_params(model) - masks - variable,
        mlp_rows=kind.rows_per_unit,
        cpb_hidden=0 if cpb is None else int(cpb[0].out_features),
        per_head=family_of(model).per_head,
    )


def linears_holder(model: nn.Module, blocks: list[nn.Module]) -> nn.Module:
    """The module holding owner 0's attention projections: its shared group, or the first block's attention."""
    shared = shared_groups(model)
    return shared[0] if shared is not None else blocks[0].attn


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
