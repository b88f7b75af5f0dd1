"""Analytic params and MACs of a slimmed model, from its per-owner widths: no forward pass, microseconds per call.

One structure and one formula for every family. A layer runs n = p + t tokens (p prefix tokens, t kept patch
tokens), its attention on the map padded to whole windows of N tokens; ViT/DeiT/Eva are the one-stage, one-window
case (no padding, N = n), Swin has no prefix tokens and keeps every token (t = H·W, padded to Tp = nW·N).
MACs per image, as `vitcompress.metrics.count_macs` counts them on the extracted model (matmuls and convs only):
    fixed:      patch-embedding conv + classifier head(s) + what the family adds at full width (ViT: an
                attention-pooling (MAP) head; Swin: every stage's patch merging, 4C_in·C_out per merged token)
    layer l:    Na·C·(3A + A)   qkv + proj              Na = n + padding (ViT: n; Swin: Tp)
                2·Na·N·A        q@kᵀ and attn@v          A = attention dims kept (sum over heads)
                (1+r)·n·C·F     MLP linears              F = MLP hidden units kept, r = input rows per unit
                                                         (1 for timm's Mlp, 2 — gate and value — for GLU/SwiGLU)
                2·H²·Na·N       head mixing (multiplexed attention transformation: both H×H mixes)
                R·(2h + h·B)    Swin V2's position-bias MLP (2 -> h -> B columns) on the window's R table rows
                C·k²·T          depth-wise conv (multiplexed MLP transformation, T = all patches of the layer)
    A layer with no attention dims left skips attention entirely: no head mixing, no position-bias MLP.
Params: everything but each owner's weights (`owner_weights`: qkv/proj, the MLP linears, Swin's bias table or
Swin V2's position-bias MLP and logit scales; a multiplexed group's count once) and the norms inside the attention
or MLP is fixed. An owner keeps B bias columns: one per kept head, all H with head mixing (removed heads keep their
slot). A norm inside the attention or MLP (timm's scale_attn_norm / scale_mlp, one per layer) keeps its weight and
bias entries of the kept dims, plus C (u) and C (c, with a bias) once anything is removed (`models.sliced_norm`).
Element-wise work (activations, gating, norms, softmax, rotary embeddings) is not counted: MACs are matmuls.

Each family adapter reads its model into a `Structure` (`Family.structure`: `models.vit.vit_structure`,
`models.swin.swin_structure`); `structure_of` dispatches. The solver, `Selection` and the sparsity loss ask it
the same questions for every family: `heads_of/head_dim_of/hidden_of(owner)`, `full()`, `cost(...)`,
`element_macs()`.
"""

from __future__ import annotations

import dataclasses
import functools

from torch import nn

from vitcompress.metrics.params import count_params
from vitcompress.models.attention import attention_weights
from vitcompress.models.family import family_of, unwrap
from vitcompress.models.layers import is_mask_param
from vitcompress.models.mlp import MlpKind


@dataclasses.dataclass(frozen=True)
class Structure:
    """The widths, token layouts and constants the slim cost model needs, read once off a (plain, multiplexed or
    masked) model. Per-layer tuples run in execution order over all stages; per-owner tuples over owners (a layer,
    or a multiplexed group)."""

    owner: tuple[int, ...]
    """Per layer: the owner of its weights and masks, the layer itself or its multiplexed group."""
    stage: tuple[int, ...]
    """Per layer: its stage (0 everywhere on an isotropic model)."""
    dim: tuple[int, ...]
    """Per layer: the embedding width C (never pruned)."""
    tokens: tuple[int, ...]
    """Per layer: patch tokens of the unslimmed model entering it (ViT: the patch grid; Swin: H·W)."""
    prefix: tuple[int, ...]
    """Per layer: class/distillation/register tokens in front of the patch tokens, always kept (0 on Swin)."""
    padded_tokens: tuple[int, ...]
    """Per layer: patch tokens once the map is padded to whole windows (= `tokens` without windows)."""
    window_area: tuple[int, ...]
    """Per layer: tokens per attention window; 0 is one global window over all of the layer's tokens (ViT)."""
    head_mix: tuple[bool, ...]
    """Per layer: multiplexed head mixing (two H×H mixes of the attention maps)."""
    conv_kernel: tuple[int, ...]
    """Per layer: k of the multiplexed MLP transformation's k×k depth-wise conv, 0 without one."""
    attn_norm: tuple[int, ...]
    """Per layer: parameters per attention dim of its norm inside the attention (0 none, 1 weight, 2 with bias)."""
    mlp_norm: tuple[int, ...]
    """Per layer: the same for the norm inside its MLP."""
    heads: tuple[int, ...]
    """Per owner: attention heads."""
    head_dims: tuple[int, ...]
    """Per owner: dims per head."""
    hiddens: tuple[int, ...]
    """Per owner: MLP hidden units."""
    table_rows: tuple[int, ...]
    """Per owner: rows of the relative-position bias table (Swin: (2h-1)(2w-1) for an h×w window; 0 on ViT)."""
    has_tokens: bool
    """Whether token masks and token selections apply (False on Swin: the paper searched it without them)."""
    per_head: bool
    """Attention heads are kept or removed whole (q/k-norm, rotary embeddings, Swin V2's cosine attention)."""
    qkv_bias: int
    """How many of q, k and v have a bias (3, 2 for EVA's and Swin V2's q/v biases, or 0)."""
    proj_bias: bool
    fc1_bias: bool
    fc2_bias: bool
    fixed_macs: int
    fixed_params: int
    mlp_rows: int = 1
    """Input-linear rows per MLP hidden unit: 1 (fc1), or 2 for gated MLPs (gate and value)."""
    cpb_hidden: int = 0
    """Swin V2: hidden width of the continuous position-bias MLP (2 -> hidden -> heads), run by every layer on
    its window's relative coordinates; 0 for a learned table or none."""

    @property
    def depth(self) -> int:
        return len(self.owner)

    @property
    def num_owners(self) -> int:
        return max(self.owner) + 1

    @property
    def num_stages(self) -> int:
        return max(self.stage) + 1

    @property
    def num_patches(self) -> int:
        """Patch tokens entering the first layer: the positions a token selection indexes."""
        return self.tokens[0]

    @property
    def num_prefix(self) -> int:
        return self.prefix[0]

    @functools.cached_property
    def _layers(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(i for i, o in enumerate(self.owner) if o == owner) for owner in range(self.num_owners))

    def layers_of(self, owner: int) -> list[int]:
        return list(self._layers[owner])

    def heads_of(self, owner: int) -> int:
        return self.heads[owner]

    def head_dim_of(self, owner: int) -> int:
        return self.head_dims[owner]

    def hidden_of(self, owner: int) -> int:
        return self.hiddens[owner]

    def owner_mix(self, owner: int) -> bool:
        """Whether any layer of the owner mixes heads (then every head keeps its slot)."""
        return any(self.head_mix[i] for i in self._layers[owner])

    def bias_columns(self, owner: int, heads: int | None) -> int:
        """Position-bias columns the owner keeps: one per kept head (`heads`, None: all), all with head mixing."""
        return self.heads[owner] if heads is None or self.owner_mix(owner) else heads

    def full(self) -> tuple[list[int], list[int], list[int]]:
        """(attention dims per owner, hidden units per owner, patch tokens per layer) of the unslimmed model."""
        return ([h * d for h, d in zip(self.heads, self.head_dims, strict=True)], list(self.hiddens),
                list(self.tokens))

    def cost(self, attn_dims: list[int], hidden: list[int], tokens: list[int] | None = None,
             heads: list[int] | None = None) -> tuple[int, int]:
        """(MACs per image, params) of the extracted model (`cost`)."""
        return cost(self, attn_dims, hidden, tokens, heads)

    def element_macs(self) -> dict[str, list[float]]:
        return element_macs(self)

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


def structure_of(model: nn.Module) -> Structure:
    """Read the cost-model inputs off a plain, multiplexed or masked model, as its family defines them."""
    model = unwrap(model)
    return family_of(model).structure(model)


def layer_macs(s: Structure, layer: int, attn_dims: int, hidden: int, tokens: int, heads: int | None = None) -> int:
    """MACs of one layer with `attn_dims` attention dims, `hidden` MLP units, `tokens` kept patch tokens and
    `heads` heads that keep any dims (None: all)."""
    c, o = s.dim[layer], s.owner[layer]
    n = s.prefix[layer] + tokens  # the MLP's tokens
    na = n + s.padded_tokens[layer] - s.tokens[layer]  # the attention's: padded to whole windows
    window = s.window_area[layer] or na
    macs = 4 * na * c * attn_dims + 2 * na * window * attn_dims + (1 + s.mlp_rows) * n * c * hidden
    if attn_dims:  # a layer with no attention dims left skips attention entirely
        if s.head_mix[layer]:
            macs += 2 * s.heads[o] * s.heads[o] * window * na
        if s.cpb_hidden:
            h = s.cpb_hidden
            macs += s.table_rows[o] * (2 * h + h * s.bias_columns(o, heads))
    if s.conv_kernel[layer]:
        macs += c * s.conv_kernel[layer] ** 2 * s.tokens[layer]
    return macs


def owner_params(s: Structure, owner: int, attn_dims: int, hidden: int, heads: int | None = None) -> int:
    """Parameters of one owner's weights at the given widths: qkv, proj, MLP linears and position bias (table,
    or Swin V2's MLP and one logit scale per kept head) with `heads` heads that keep any dims (None: all)."""
    c = s.dim[s._layers[owner][0]]
    columns = s.bias_columns(owner, heads)
    if s.cpb_hidden:  # Linear(2, h) with bias, Linear(h, columns) without
        bias_params = 3 * s.cpb_hidden + s.cpb_hidden * columns + (s.heads[owner] if heads is None else heads)
    else:
        bias_params = s.table_rows[owner] * columns
    return (3 * attn_dims * c + attn_dims * s.qkv_bias + attn_dims * c + c * s.proj_bias
            + hidden * s.mlp_rows * (c + s.fc1_bias) + hidden * c + c * s.fc2_bias + bias_params)


def inner_norm_params(per_entry: int, kept: int, full: int, width: int) -> int:
    """Parameters of a norm over `full` entries inside a layer once `kept` remain: its entries, plus the removed
    ones' vectors u (and c, with a bias) of the layer's `width` when any was removed."""
    if not per_entry:
        return 0
    return per_entry * kept + (width * (1 + (per_entry > 1)) if kept < full else 0)


def cost(s: Structure, attn_dims: list[int], hidden: list[int], tokens: list[int] | None = None,
         heads: list[int] | None = None) -> tuple[int, int]:
    """(MACs per image, params) of the extracted model: per-owner attention dims and MLP units, per-layer kept
    patch tokens (None: all) and per-owner heads that keep any dims (None: all)."""
    tokens = s.tokens if tokens is None else tokens
    kept_heads = [None] * s.num_owners if heads is None else heads
    macs = s.fixed_macs + sum(layer_macs(s, i, attn_dims[o], hidden[o], tokens[i], kept_heads[o])
                              for i, o in enumerate(s.owner))
    params = s.fixed_params + sum(owner_params(s, o, attn_dims[o], hidden[o], kept_heads[o])
                                  for o in range(s.num_owners))
    for i, o in enumerate(s.owner):
        params += inner_norm_params(s.attn_norm[i], attn_dims[o], s.heads[o] * s.head_dims[o], s.dim[i])
        params += inner_norm_params(s.mlp_norm[i], hidden[o], s.hiddens[o], s.dim[i])
    return int(macs), int(params)


def element_macs(s: Structure) -> dict[str, list[float]]:
    """MACs each mask element controls in the unslimmed model, per owner (attn, mlp) or per layer (tokens).

    attn: one head dim in every layer of its owner: Na·(4C + 2N), times head_dim for a whole-head mask.
    mlp: one hidden unit in every layer of its owner: (1+r)·n·C.
    tokens (models with token masks): one patch token from its layer to the last (dropping it there drops it for
        good): per layer C·(4A + (1+r)F) + 4·N·A (its row and column of both attention matmuls) + 4·H²·N with
        head mixing.
    """
    attn, mlp = [], []
    for o in range(s.num_owners):
        per_dim = mlp_unit = 0
        for i in s._layers[o]:
            n, c = s.prefix[i] + s.tokens[i], s.dim[i]
            na = s.prefix[i] + s.padded_tokens[i]
            per_dim += na * (4 * c + 2 * (s.window_area[i] or na))
            mlp_unit += (1 + s.mlp_rows) * n * c
        attn.append(float(per_dim * (s.head_dims[o] if s.per_head else 1)))
        mlp.append(float(mlp_unit))
    out = {"attn": attn, "mlp": mlp}
    if s.has_tokens:
        per_layer = []
        for i, o in enumerate(s.owner):
            window = s.window_area[i] or s.prefix[i] + s.padded_tokens[i]
            a, f, h = s.heads[o] * s.head_dims[o], s.hiddens[o], s.heads[o]
            per_layer.append(s.dim[i] * (4 * a + (1 + s.mlp_rows) * f) + 4 * window * a
                             + (4 * h * h * window if s.head_mix[i] else 0))
        out["tokens"] = [float(sum(per_layer[i:])) for i in range(s.depth)]
    return out


# -- reading helpers the family adapters share ------------------------------------------------------------------

def owner_weights(attn: nn.Module, mlp: nn.Module, kind: MlpKind) -> dict[str, nn.Module | nn.Parameter]:
    """The weights one owner holds: the attention weights (`attention_weights`: projections, biases, Swin's bias
    table or Swin V2's position-bias MLP, logit scales) of `attn` and the MLP linears of `mlp` — a layer's own
    attention and MLP, or its multiplexed group's shared module for both."""
    return {**attention_weights(attn), **{name: getattr(mlp, name) for name in kind.linears}}


def fixed_params(model: nn.Module, weights: list[dict[str, nn.Module | nn.Parameter]], inner_norms: int) -> int:
    """Parameters the cost model holds fixed: all but the masks, the owners' `weights` and the `inner_norms`."""
    masks = sum(p.numel() for n, p in model.named_parameters() if is_mask_param(n))
    variable = sum(_numel(w) for ws in weights for w in ws.values())
    return count_params(model) - masks - variable - inner_norms


def norm_entries(norm: nn.Module | None) -> int:
    """Parameters per entry of a norm inside the attention or MLP: 0 (none), 1 (weight) or 2 (and bias)."""
    return sum(p is not None for p in (getattr(norm, "weight", None), getattr(norm, "bias", None)))


def conv_kernel(block: nn.Module) -> int:
    """k of a multiplexed layer's k×k depth-wise conv (the MLP transformation), 0 without one."""
    transform = getattr(block, "mlp_transform", None)
    return 0 if transform is None else int(transform.conv.kernel_size[0])


def patch_embed_macs(model: nn.Module) -> int:
    """MACs of the patch-embedding conv over the whole grid."""
    pe = model.patch_embed.proj
    gh, gw = model.patch_embed.grid_size
    return pe.out_channels * (pe.in_channels // pe.groups) * pe.kernel_size[0] * pe.kernel_size[1] * gh * gw


def _numel(weights: nn.Module | nn.Parameter) -> int:
    return weights.numel() if isinstance(weights, nn.Parameter) else sum(p.numel() for p in weights.parameters())
