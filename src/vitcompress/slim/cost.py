"""Analytic params and MACs of a slimmed ViT, from its per-layer widths: no forward pass, microseconds per call.

MACs per image, as `vitcompress.metrics.count_macs` counts them on the extracted model (matmuls and convs only):
    fixed:      patch-embedding conv + classifier head(s)
    layer l:    N·C·(3A + A)  qkv + proj          N = prefix + kept patch tokens at layer l
                2·N²·A        q@kᵀ and attn@v     A = attention dims kept (sum over heads)
                2·N·C·F       fc1 + fc2           F = MLP hidden units kept
                2·H²·N²       head mixing (multiplexed attention transformation: both H×H mixes; none if A = 0)
                C·k²·P        depth-wise conv (multiplexed MLP transformation, P = all patches)
Params: everything but the qkv/proj/fc1/fc2 linears is fixed; a multiplexed group's linears count once.

Swin has its own structure (`vitcompress.slim.swin_cost.SwinStructure`: windows, stages, per-owner widths);
`structure_of` returns whichever fits the model. Both answer the same questions for the solver, `Selection` and
the sparsity loss: `heads_of/head_dim_of/hidden_of(owner)`, `full()`, `cost(...)`, `element_macs()`.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.metrics.params import count_params
from vitcompress.models.spec import unwrap
from vitcompress.models.swin import is_swin
from vitcompress.slim.swin_cost import SwinStructure, swin_structure_of


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
    qkv_bias: bool
    proj_bias: bool
    fc1_bias: bool
    fc2_bias: bool
    head_mix: tuple[bool, ...]
    conv_kernel: tuple[int, ...]
    per_head: bool
    """q/k-norm model: attention heads are kept or removed whole."""
    fixed_macs: int
    fixed_params: int

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


def owner_linears(model: nn.Module, owner: int) -> tuple[nn.Linear, ...]:
    """qkv, proj, fc1, fc2 of one owner: a layer's own, or its multiplexed group's shared ones."""
    shared = getattr(model, "blocks_shared", None)
    if shared is not None:
        w = shared[owner]
        return w.qkv, w.proj, w.fc1, w.fc2
    blk = model.blocks[owner]
    return blk.attn.qkv, blk.attn.proj, blk.mlp.fc1, blk.mlp.fc2


def structure_of(model: nn.Module) -> Structure | SwinStructure:
    """Read the cost-model inputs off a plain, multiplexed or masked timm ViT/DeiT or Swin."""
    model = unwrap(model)
    if is_swin(model):
        return swin_structure_of(model)
    if getattr(model, "attn_pool", None) is not None:
        raise VitCompressError("ViT-Slim does not support attention-pooling (MAP) heads yet")
    blocks = list(model.blocks)
    attn0 = blocks[0].attn
    shared = getattr(model, "blocks_shared", None)
    owner = tuple(int(blk.group) for blk in blocks) if shared is not None else tuple(range(len(blocks)))
    qkv, proj, fc1, fc2 = owner_linears(model, 0)
    linear_params = sum(
        p.numel() for o in range(max(owner) + 1) for lin in owner_linears(model, o) for p in lin.parameters()
    )
    mask_params = sum(p.numel() for n, p in model.named_parameters() if "mask" in n.rsplit(".", 1)[-1])
    pe = model.patch_embed.proj
    grid = model.patch_embed.grid_size
    fixed_macs = pe.out_channels * (pe.in_channels // pe.groups) * pe.kernel_size[0] * pe.kernel_size[1]
    fixed_macs *= grid[0] * grid[1]
    for head in (model.head, getattr(model, "head_dist", None)):
        if isinstance(head, nn.Linear):
            fixed_macs += head.in_features * head.out_features
    return Structure(
        depth=len(blocks),
        embed_dim=model.embed_dim,
        num_heads=attn0.num_heads,
        head_dim=attn0.head_dim,
        hidden=fc1.out_features,
        num_prefix=model.num_prefix_tokens,
        num_patches=grid[0] * grid[1],
        owner=owner,
        qkv_bias=qkv.bias is not None,
        proj_bias=proj.bias is not None,
        fc1_bias=fc1.bias is not None,
        fc2_bias=fc2.bias is not None,
        head_mix=tuple(getattr(blk.attn, "transform", None) is not None for blk in blocks),
        conv_kernel=tuple(_conv_kernel(blk) for blk in blocks),
        per_head=not isinstance(attn0.q_norm, nn.Identity),
        fixed_macs=int(fixed_macs),
        fixed_params=count_params(model) - mask_params - linear_params,
    )


def _conv_kernel(block: nn.Module) -> int:
    transform = getattr(block, "mlp_transform", None)
    return 0 if transform is None else int(transform.conv.kernel_size[0])


def layer_macs(s: Structure, attn_dims: int, hidden: int, tokens: int, layer: int) -> int:
    """MACs of one layer with `attn_dims` attention dims, `hidden` MLP units and `tokens` kept patch tokens."""
    n, c = s.num_prefix + tokens, s.embed_dim
    macs = 4 * n * c * attn_dims + 2 * n * n * attn_dims + 2 * n * c * hidden
    if s.head_mix[layer] and attn_dims:  # a layer with no attention dims left skips attention entirely
        macs += 2 * s.num_heads * s.num_heads * n * n
    if s.conv_kernel[layer]:
        macs += c * s.conv_kernel[layer] ** 2 * s.num_patches
    return macs


def owner_params(s: Structure, attn_dims: int, hidden: int) -> int:
    """Parameters of one owner's qkv, proj, fc1 and fc2 at the given widths."""
    c = s.embed_dim
    return (3 * attn_dims * (c + s.qkv_bias) + attn_dims * c + c * s.proj_bias
            + hidden * (c + s.fc1_bias) + hidden * c + c * s.fc2_bias)


def cost(s: Structure, attn_dims: list[int], hidden: list[int], tokens: list[int]) -> tuple[int, int]:
    """(MACs per image, params) of the extracted model: per-owner widths, per-layer kept patch tokens."""
    macs = s.fixed_macs + sum(
        layer_macs(s, attn_dims[o], hidden[o], tokens[i], i) for i, o in enumerate(s.owner)
    )
    params = s.fixed_params + sum(owner_params(s, attn_dims[o], hidden[o]) for o in range(s.num_owners))
    return int(macs), int(params)


def element_macs(s: Structure) -> dict[str, list[float]]:
    """MACs each mask element controls in the unslimmed model, per owner (attn, mlp) or per layer (tokens).

    attn: one head dim in every layer of its owner: N·(4C + 2N), times head_dim for a whole-head mask.
    mlp: one hidden unit in every layer of its owner: 2·N·C.
    tokens: one patch token from its layer to the last (dropping it there drops it for good): per layer
        C·(4A + 2F) + 4·N·A (its row and column of both attention matmuls) + 4·H²·N with head mixing.
    """
    n, c = s.num_prefix + s.num_patches, s.embed_dim
    a, f, h = s.num_heads * s.head_dim, s.hidden, s.num_heads
    per_dim = n * (4 * c + 2 * n) * (s.head_dim if s.per_head else 1)
    attn = [float(per_dim * len(s.layers_of(o))) for o in range(s.num_owners)]
    mlp = [float(2 * n * c * len(s.layers_of(o))) for o in range(s.num_owners)]
    per_layer = [c * (4 * a + 2 * f) + 4 * n * a + (4 * h * h * n if s.head_mix[i] else 0)
                 for i in range(s.depth)]
    tokens = [float(sum(per_layer[i:])) for i in range(s.depth)]
    return {"attn": attn, "mlp": mlp, "tokens": tokens}
