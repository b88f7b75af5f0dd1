"""Analytic params and MACs of a slimmed ViT, from its per-layer widths: no forward pass, microseconds per call.

MACs per image, as `vitcompress.metrics.count_macs` counts them on the extracted model (matmuls and convs only):
    fixed:      patch-embedding conv + classifier head(s) + an attention-pooling (MAP) head, counted on the module
    layer l:    N·C·(3A + A)  qkv + proj          N = prefix + kept patch tokens at layer l
                2·N²·A        q@kᵀ and attn@v     A = attention dims kept (sum over heads)
                (1+r)·N·C·F   MLP linears         F = MLP hidden units kept, r = input rows per unit
                                                  (1 for timm's Mlp, 2 — gate and value — for GLU/SwiGLU)
                2·H²·N²       head mixing (multiplexed attention transformation: both H×H mixes; none if A = 0)
                C·k²·P        depth-wise conv (multiplexed MLP transformation, P = all patches)
Params: everything but the qkv/proj and MLP linears and the norms inside them is fixed; a multiplexed group's
linears count once. A norm inside the attention or MLP (timm's scale_attn_norm / scale_mlp, one per layer) keeps
its weight and bias entries of the kept dims, plus C (u) and C (c, with a bias) once anything is removed
(`models.sliced_norm`).
Element-wise work (activations, gating, norms, softmax, rotary embeddings) is not counted: MACs are matmuls.

Swin has its own structure (`vitcompress.slim.swin_cost.SwinStructure`: windows, stages, per-owner widths);
`structure_of` returns whichever fits the model. Both answer the same questions for the solver, `Selection` and
the sparsity loss: `heads_of/head_dim_of/hidden_of(owner)`, `full()`, `cost(...)`, `element_macs()`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from vitcompress.metrics.macs import count_module_macs
from vitcompress.metrics.params import count_params
from vitcompress.models.attention import attention_weights, qkv_bias_parts
from vitcompress.models.family import family_of, unwrap
from vitcompress.models.layers import is_mask_param
from vitcompress.models.mlp import mlp_kind
from vitcompress.slim.swin_cost import SwinStructure


@dataclasses.dataclass(frozen=True)
class Structure:
    """The widths and constants of a ViT that the slim cost model needs, read once off the (masked) model."""

    depth: int
    embed_dim: int
    num_heads: int
    head_dim: int
    hidden: int
    num_prefix: int
    num_patches: int
    owner: tuple[int, ...]
    """Layer -> owner of its linears and masks: the layer itself, or its multiplexed group."""
    qkv_bias: int
    """How many of q, k and v have a bias (3, 2 for EVA's q/v biases, or 0)."""
    proj_bias: bool
    fc1_bias: bool
    fc2_bias: bool
    head_mix: tuple[bool, ...]
    conv_kernel: tuple[int, ...]
    per_head: bool
    """q/k-norm model: attention heads are kept or removed whole."""
    fixed_macs: int
    fixed_params: int
    mlp_rows: int = 1
    """Input-linear rows per MLP hidden unit: 1 (fc1), or 2 for gated MLPs (gate and value)."""
    attn_norm: tuple[int, ...] = ()
    """Per layer: parameters per attention dim of its norm inside the attention (0 none, 1 weight, 2 with bias)."""
    mlp_norm: tuple[int, ...] = ()
    """Per layer: the same for the norm inside its MLP."""

    @property
    def num_owners(self) -> int:
        return max(self.owner) + 1

    has_tokens = True  # a class attribute, not a field: token masks can be attached and token selections cut

    def layers_of(self, owner: int) -> list[int]:
        return [i for i, o in enumerate(self.owner) if o == owner]

    def heads_of(self, owner: int) -> int:
        return self.num_heads

    def head_dim_of(self, owner: int) -> int:
        return self.head_dim

    def hidden_of(self, owner: int) -> int:
        return self.hidden

    def full(self) -> tuple[list[int], list[int], list[int]]:
        """(attention dims per owner, hidden units per owner, patch tokens per layer) of the unslimmed model."""
        owners = self.num_owners
        return ([self.num_heads * self.head_dim] * owners, [self.hidden] * owners,
                [self.num_patches] * self.depth)

    def cost(self, attn_dims: list[int], hidden: list[int], tokens: list[int],
             heads: list[int] | None = None) -> tuple[int, int]:
        """(MACs per image, params) of the extracted model; `heads` (kept per owner) costs nothing on ViT."""
        return cost(self, attn_dims, hidden, tokens)

    def element_macs(self) -> dict[str, list[float]]:
        return element_macs(self)


def owner_linears(model: nn.Module, owner: int) -> dict[str, nn.Module | nn.Parameter]:
    """The attention weights (`attention_weights`) and MLP linears of one owner: a layer's own, or its multiplexed
    group's shared ones."""
    kind = mlp_kind(model.blocks[0].mlp)
    shared = getattr(model, "blocks_shared", None)
    holder_attn, holder_mlp = (shared[owner], shared[owner]) if shared is not None else (
        model.blocks[owner].attn, model.blocks[owner].mlp)
    return {**attention_weights(holder_attn), **{name: getattr(holder_mlp, name) for name in kind.linears}}


def structure_of(model: nn.Module) -> Structure | SwinStructure:
    """Read the cost-model inputs off a plain, multiplexed or masked model, as its family defines them."""
    model = unwrap(model)
    return family_of(model).structure(model)


def vit_structure_of(model: nn.Module) -> Structure:
    """Read the cost-model inputs off a plain, multiplexed or masked timm ViT/DeiT (or another isotropic family
    read the same way)."""
    blocks = list(model.blocks)
    attn0 = blocks[0].attn
    shared = getattr(model, "blocks_shared", None)
    owner = tuple(int(blk.group) for blk in blocks) if shared is not None else tuple(range(len(blocks)))
    kind = mlp_kind(blocks[0].mlp)
    linears = owner_linears(model, 0)
    proj, fc1, fc2 = linears["proj"], linears[kind.inputs[0]], linears["fc2"]
    linear_params = sum(_numel(w) for o in range(max(owner) + 1) for w in owner_linears(model, o).values())
    mask_params = sum(p.numel() for n, p in model.named_parameters() if is_mask_param(n))
    attn_norm = tuple(_norm_params_per_entry(getattr(blk.attn, "norm", None)) for blk in blocks)
    mlp_norm = tuple(_norm_params_per_entry(getattr(blk.mlp, "norm", None)) for blk in blocks)
    inner_norm_params = sum(attn_norm) * attn0.num_heads * attn0.head_dim + sum(mlp_norm) * fc2.in_features
    pe = model.patch_embed.proj
    grid = model.patch_embed.grid_size
    fixed_macs = pe.out_channels * (pe.in_channels // pe.groups) * pe.kernel_size[0] * pe.kernel_size[1]
    fixed_macs *= grid[0] * grid[1]
    for head in (model.head, getattr(model, "head_dist", None)):
        if isinstance(head, nn.Linear):
            fixed_macs += head.in_features * head.out_features
    pool = getattr(model, "attn_pool", None)
    if pool is not None:  # attention pooling (MAP): a fixed cost, it reads every token at the full width
        weight = next(pool.parameters())
        tokens = torch.zeros(1, model.num_prefix_tokens + grid[0] * grid[1], model.embed_dim, device=weight.device,
                             dtype=weight.dtype)
        fixed_macs += count_module_macs(pool, tokens)
    return Structure(
        depth=len(blocks),
        embed_dim=model.embed_dim,
        num_heads=attn0.num_heads,
        head_dim=attn0.head_dim,
        hidden=fc2.in_features,
        num_prefix=model.num_prefix_tokens,
        num_patches=grid[0] * grid[1],
        owner=owner,
        qkv_bias=qkv_bias_parts(shared[0] if shared is not None else blocks[0].attn),
        proj_bias=proj.bias is not None,
        fc1_bias=fc1.bias is not None,
        fc2_bias=fc2.bias is not None,
        head_mix=tuple(getattr(blk.attn, "transform", None) is not None for blk in blocks),
        conv_kernel=tuple(_conv_kernel(blk) for blk in blocks),
        per_head=not isinstance(attn0.q_norm, nn.Identity),
        fixed_macs=int(fixed_macs),
        fixed_params=count_params(model) - mask_params - linear_params - inner_norm_params,
        mlp_rows=kind.rows_per_unit,
        attn_norm=attn_norm,
        mlp_norm=mlp_norm,
    )


def _norm_params_per_entry(norm: nn.Module) -> int:
    return sum(p is not None for p in (getattr(norm, "weight", None), getattr(norm, "bias", None)))


def inner_norm_params(per_entry: int, kept: int, full: int, width: int) -> int:
    """Parameters of a norm over `full` entries inside a layer once `kept` remain: its entries, plus the removed
    ones' vectors u (and c, with a bias) of the layer's `width` when any was removed."""
    if not per_entry:
        return 0
    return per_entry * kept + (width * (1 + (per_entry > 1)) if kept < full else 0)


def _numel(weights: nn.Module | nn.Parameter) -> int:
    return weights.numel() if isinstance(weights, nn.Parameter) else sum(p.numel() for p in weights.parameters())


def _conv_kernel(block: nn.Module) -> int:
    transform = getattr(block, "mlp_transform", None)
    return 0 if transform is None else int(transform.conv.kernel_size[0])


def layer_macs(s: Structure, attn_dims: int, hidden: int, tokens: int, layer: int) -> int:
    """MACs of one layer with `attn_dims` attention dims, `hidden` MLP units and `tokens` kept patch tokens."""
    n, c = s.num_prefix + tokens, s.embed_dim
    macs = 4 * n * c * attn_dims + 2 * n * n * attn_dims + (1 + s.mlp_rows) * n * c * hidden
    if s.head_mix[layer] and attn_dims:  # a layer with no attention dims left skips attention entirely
        macs += 2 * s.num_heads * s.num_heads * n * n
    if s.conv_kernel[layer]:
        macs += c * s.conv_kernel[layer] ** 2 * s.num_patches
    return macs


def owner_params(s: Structure, attn_dims: int, hidden: int) -> int:
    """Parameters of one owner's qkv, proj and MLP linears at the given widths."""
    c = s.embed_dim
    return (3 * attn_dims * c + attn_dims * s.qkv_bias + attn_dims * c + c * s.proj_bias
            + hidden * s.mlp_rows * (c + s.fc1_bias) + hidden * c + c * s.fc2_bias)


def cost(s: Structure, attn_dims: list[int], hidden: list[int], tokens: list[int]) -> tuple[int, int]:
    """(MACs per image, params) of the extracted model: per-owner widths, per-layer kept patch tokens."""
    macs = s.fixed_macs + sum(
        layer_macs(s, attn_dims[o], hidden[o], tokens[i], i) for i, o in enumerate(s.owner)
    )
    params = s.fixed_params + sum(owner_params(s, attn_dims[o], hidden[o]) for o in range(s.num_owners))
    full_attn, c = s.num_heads * s.head_dim, s.embed_dim
    for i, o in enumerate(s.owner):
        if s.attn_norm:
            params += inner_norm_params(s.attn_norm[i], attn_dims[o], full_attn, c)
        if s.mlp_norm:
            params += inner_norm_params(s.mlp_norm[i], hidden[o], s.hidden, c)
    return int(macs), int(params)


def element_macs(s: Structure) -> dict[str, list[float]]:
    """MACs each mask element controls in the unslimmed model, per owner (attn, mlp) or per layer (tokens).

    attn: one head dim in every layer of its owner: N·(4C + 2N), times head_dim for a whole-head mask.
    mlp: one hidden unit in every layer of its owner: (1+r)·N·C.
    tokens: one patch token from its layer to the last (dropping it there drops it for good): per layer
        C·(4A + (1+r)F) + 4·N·A (its row and column of both attention matmuls) + 4·H²·N with head mixing.
    """
    n, c = s.num_prefix + s.num_patches, s.embed_dim
    a, f, h = s.num_heads * s.head_dim, s.hidden, s.num_heads
    per_dim = n * (4 * c + 2 * n) * (s.head_dim if s.per_head else 1)
    attn = [float(per_dim * len(s.layers_of(o))) for o in range(s.num_owners)]
    mlp = [float((1 + s.mlp_rows) * n * c * len(s.layers_of(o))) for o in range(s.num_owners)]
    per_layer = [c * (4 * a + (1 + s.mlp_rows) * f) + 4 * n * a + (4 * h * h * n if s.head_mix[i] else 0)
                 for i in range(s.depth)]
    tokens = [float(sum(per_layer[i:])) for i in range(s.depth)]
    return {"attn": attn, "mlp": mlp, "tokens": tokens}
