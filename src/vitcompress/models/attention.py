"""The one attention core every surgery builds on: multiplexed, masked and pruned attention are its options.

    x -> qkv -> per head-group q, k, v -> q_norm, k_norm -> × dim mask -> v_tap
      -> q·kᵀ·scale + positional bias -> head mixing (pre) -> logit masks -> softmax -> head mixing (post)
      -> @ v -> merge heads -> norm -> proj

Options, each read off the attention it replaces or given by the surgery:
- weights (qkv, proj, a relative-position bias table, the attention mask) owned by the module, or bound to a
  multiplexed group's shared weights (`bind`), which are registered once, elsewhere in the model;
- `kept`: the head dims each head keeps after slimming (ragged heads). Heads of equal width form a group and each
  group runs one attention with the *original* head's scale, so the result is exact and the MACs count only real
  dims. qkv rows are laid out group by group, each as timm lays out a layer ([q | k | v] of the group's heads), so
  a layer whose heads all kept the full width has exactly timm's layout; proj columns and bias-table columns
  follow the same head order (`QKV_LAYOUT`);
- a positional bias: Swin's relative-position table, or Swin V2's continuous one (`cpb_mlp` on the layer's
  relative coordinates, 16·sigmoid), one column per head in layout order (all columns, in head order, when
  heads are mixed);
- Swin V2's cosine attention: cos(q, k) times a learned per-head logit scale instead of q·kᵀ·scale;
- head mixing (MiniViT's attention transformation). It mixes attention maps across heads, so a head with no dims
  left still contributes a map (its logits are its bias alone, q and k being zero in the masked reference): with
  mixing every head keeps its slot; without, such a head is removed;
- logit masks: Swin's window mask (timm's additive (nW, N, N) float mask, or a boolean one, True = may attend,
  which gives masked keys exactly -inf) and ViT-Slim's token key bias (log K, -inf on dropped tokens); both come
  after the pre-softmax mixing, so no head can pull attention back onto a masked key;
- rotary position embeddings (EVA-02, DINOv3, PE, RoPE-ViT), applied to q and k of the patch tokens after
  q/k-norm, as timm's EvaAttention/AttentionRope do; per-head tables (mixed RoPE) follow the kept heads;
- the projections of q, k and v: one fused `qkv` Linear, a fused weight with separate q/v biases (EVA's `q_bias`,
  `v_bias`; k has none), or separate `q_proj`/`k_proj`/`v_proj`. The last two need heads kept whole (one group);
- q/k-norm, the attention-output norm (timm's `scale_attn_norm`; sliced exactly by `models.sliced_norm`), dropout.

`q_norm`, `k_norm` and `v_tap` are always modules, so the distillation recorders read Q, K and V the same way from
every family. Fused SDPA runs whenever the result is the same (no mixing, no mask parameter, no token bias).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from timm.layers import apply_rot_embed_cat
from torch import Tensor, nn

from vitcompress.errors import VitCompressError
from vitcompress.models.layers import head_dim as head_dim_of
from vitcompress.models.sliced_norm import norm_linear

QKV_LAYOUT = "grouped"
"""Recorded in the slim spec step: qkv rows per width group as [q | k | v] of the group's heads. Models extracted
before this layout (rows as [q of all heads | k | v]) would load with permuted rows, so they are refused."""


def head_order(kept: list[list[int]]) -> list[int]:
    """Kept heads grouped by width (ascending), by index within a width: the qkv/proj/table layout."""
    return sorted((h for h, dims in enumerate(kept) if dims), key=lambda h: (len(kept[h]), h))


def width_groups(kept: list[list[int]]) -> list[tuple[int, list[int]]]:
    """(width, heads) of each run of equal-width heads in `head_order`: one attention call per group."""
    groups: list[tuple[int, list[int]]] = []
    for h in head_order(kept):
        if groups and groups[-1][0] == len(kept[h]):
            groups[-1][1].append(h)
        else:
            groups.append((len(kept[h]), [h]))
    return groups


def mask_windows(attn: Tensor, mask: Tensor) -> Tensor:
    """Apply a window mask to logits (B·nW, H, N, N): timm's additive (nW, N, N) float mask (0 / -100), or a
    boolean one (True = may attend), which gives masked keys exactly -inf."""
    nw, heads, n = mask.shape[0], attn.shape[1], attn.shape[-1]
    attn = attn.reshape(-1, nw, heads, n, n)
    attn = attn.masked_fill(~mask.unsqueeze(1), float("-inf")) if mask.dtype == torch.bool else attn + mask.unsqueeze(1)
    return attn.reshape(-1, heads, n, n)


def _apply(module: nn.Module, x: Tensor) -> Tensor:
    # An Identity nobody hooks is skipped: at small widths every module call is a measurable share of the time.
    if type(module) is nn.Identity and not module._forward_hooks:
        return x
    return module(x)


class AttentionCore(nn.Module):
    """Multi-head self-attention with every option vitcompress's surgeries need (see the module docstring).

    Built from a timm attention (or another core) with `AttentionCore.of(attn, ...)`. Owned weights keep timm's
    names (`qkv`, `proj`, `relative_position_bias_table`), so state-dict keys do not change; a mask parameter
    is `dim_mask`, (heads, head_dim) or (heads, 1) for whole heads.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        scale: float,
        kept: list[list[int]] | None = None,
        window_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.scale = num_heads, head_dim, scale
        kept = [list(range(head_dim))] * num_heads if kept is None else kept
        self.head_dims = [len(dims) for dims in kept]
        self.attn_dim = sum(self.head_dims)
        self.groups = width_groups(kept)  # (width, heads), in qkv/proj/table layout order
        self._sizes = [3 * width * len(heads) for width, heads in self.groups]
        self._shapes = [(3, len(heads), width) for width, heads in self.groups]
        order = head_order(kept)
        # Layout position -> head slot, for the mixing (None where the layout is the identity).
        mixed = torch.as_tensor(order, dtype=torch.long) if order != list(range(num_heads)) else None
        self.register_buffer("mixed_heads", mixed, persistent=False)
        self.window_size = tuple(window_size) if window_size is not None else None
        self.window_area = window_size[0] * window_size[1] if window_size is not None else None
        self.fused_attn = True
        self.q_norm: nn.Module = nn.Identity()
        self.k_norm: nn.Module = nn.Identity()
        self.v_tap: nn.Module = nn.Identity()  # a hook point, so distillation reads V as it reads Q and K
        self.transform: nn.Module | None = None
        self.attn_drop: nn.Module = nn.Dropout(0.0)
        self.norm: nn.Module = nn.Identity()
        self.proj_drop: nn.Module = nn.Dropout(0.0)
        self.dim_mask: nn.Parameter | None = None
        self.cosine = False  # Swin V2: cos(q, k) · exp(logit_scale) logits
        self.rope_prefix = 0  # tokens in front of the patches, which rotary embeddings leave alone
        self.rotate_half = False
        self._shared: nn.Module | None = None

    @classmethod
    def of(
        cls,
        attn: nn.Module,
        *,
        owns: bool | None = None,
        kept: list[list[int]] | None = None,
        transform: nn.Module | None | bool = False,
        mask_shape: tuple[int, int] | None = None,
        share_children: bool = True,
    ) -> AttentionCore:
        """A core computing what `attn` (timm's Attention/WindowAttention, or a core) computes, with options.

        Args:
            attn: The attention replaced. Its norms, dropouts and (if `owns`) weights are taken over.
            owns: Keep `attn`'s qkv/proj/bias table as this module's own (default: when it has them); False for
                a multiplexed layer, whose weights come from its group (`bind`).
            kept: Slim to these head dims (slices owned weights; a bound group must be sliced alike).
            transform: A head-mixing module; False keeps `attn`'s own (if any), None removes it.
            mask_shape: Add an owned `dim_mask` of this shape, all ones.
            share_children: Take `attn`'s child modules as they are (they move over); False: deep copies, for a
                student built beside the teacher it came from.
        """
        take = (lambda m: m) if share_children else copy.deepcopy
        window = getattr(attn, "window_size", None)
        dim = head_dim_of(attn)
        scale = float(getattr(attn, "scale", dim**-0.5))  # Swin V2's cosine attention has none (logit scales)
        core = cls(attn.num_heads, dim, scale, kept, tuple(window) if window is not None else None)
        core.fused_attn = bool(getattr(attn, "fused_attn", True))
        for name in ("q_norm", "k_norm", "v_tap", "attn_drop", "norm", "proj_drop"):
            child = getattr(attn, name, None)
            if isinstance(child, nn.Module):
                setattr(core, name, take(child))
        core.transform = getattr(attn, "transform", None) if transform is False else transform
        core.rope_prefix = int(getattr(attn, "rope_prefix", getattr(attn, "num_prefix_tokens", 0)))
        core.rotate_half = bool(getattr(attn, "rotate_half", False))
        core.cosine = isinstance(attention_weights(attn).get("logit_scale"), nn.Parameter) or bool(
            getattr(attn, "cosine", False))
        for name in ("relative_position_index", "relative_coords_table"):
            buf = getattr(attn, name, None)
            if buf is not None:
                core.register_buffer(name, buf.clone(), persistent=False)
        owns = isinstance(getattr(attn, "proj", None), nn.Linear) if owns is None else owns
        if owns:
            for name, value in attention_weights(attn).items():
                if isinstance(value, nn.Module):
                    core.add_module(name, take(value))
                elif isinstance(value, nn.Parameter):
                    core.register_parameter(name, value if share_children else nn.Parameter(value.detach().clone()))
                else:
                    core.register_buffer(name, value.clone(), persistent=False)
            if kept is not None:
                slice_attention(core, kept, core.head_dim, mixing=core.transform is not None)
            if mask_shape is not None:
                core.dim_mask = nn.Parameter(torch.ones(mask_shape, device=core.proj.weight.device))
        return core

    def bind(self, shared: nn.Module) -> None:
        # Held outside the module tree on purpose: a group's weights are registered once (the model's
        # `blocks_shared`), so state_dict() and parameters() see a single copy.
        object.__setattr__(self, "_shared", shared)

    def weights(self) -> nn.Module:
        """The module holding qkv/proj (and any bias table and dim mask): this one, or the bound group."""
        return self._shared if self._shared is not None else self

    def rel_pos_bias(self, table: Tensor, n: int) -> Tensor:
        """(table columns, N, N) relative-position bias of a window."""
        return table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def project(self, w: nn.Module, x: Tensor) -> Tensor:
        """q, k, v of every kept head in layout order, (B, N, 3·attention dims)."""
        qkv = getattr(w, "qkv", None)
        if qkv is None:
            return torch.cat((w.q_proj(x), w.k_proj(x), w.v_proj(x)), dim=-1)
        q_bias = getattr(w, "q_bias", None)
        if q_bias is None:
            return qkv(x)
        return F.linear(x, qkv.weight, torch.cat((q_bias, torch.zeros_like(q_bias), w.v_bias)))  # k: no bias

    def forward(
        self,
        x: Tensor,
        rope: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        mask: Tensor | None = None,
        key_bias: Tensor | None = None,
    ) -> Tensor:
        """x: (B, N, C) tokens (B·nW windows on Swin).

        Args:
            rope: timm's concatenated sin/cos rotary embedding of the patch tokens, (N - prefix, 2·head_dim), or
                one per head, (heads, N - prefix, 2·head_dim).
            attn_mask, is_causal: timm Attention's: an additive or boolean (B, H, N, N)-broadcastable mask.
            mask: a Swin window mask, (nW, N, N), additive float or boolean.
            key_bias: (1, 1, 1, N) added to the logits after mixing (ViT-Slim token masks).
        """
        w = self.weights()
        B, N, _ = x.shape
        if not self.attn_dim:  # every head removed: zero output, as the masked model's all-zero v gives
            return self.proj_drop(norm_linear(self.norm, w.proj, x.new_zeros(B, N, 0)))
        qkv = self.project(w, x)
        chunks = qkv.split(self._sizes, dim=-1) if len(self._sizes) > 1 else (qkv,)
        groups = [c.unflatten(-1, s).permute(2, 0, 3, 1, 4).unbind(0)
                  for c, s in zip(chunks, self._shapes, strict=True)]
        dim_mask = getattr(w, "dim_mask", None)
        out = []
        for (_, heads), (q, k, v) in zip(self.groups, groups, strict=True):
            q, k = _apply(self.q_norm, q), _apply(self.k_norm, k)
            if dim_mask is not None:
                # After q/k-norm: a per-head scale before a LayerNorm over head_dim would be normalised away.
                m = dim_mask.unsqueeze(1)  # (H, 1, d) or (H, 1, 1)
                q, k, v = q * m, k * m, v * m
            if rope is not None:
                q, k = self._rotate(q, rope, heads).type_as(v), self._rotate(k, rope, heads).type_as(v)
            out.append((q, k, _apply(self.v_tap, v)))
        table = self._bias_table(w)
        bias = self.rel_pos_bias(table, N) if table is not None else None
        scale = self.scale
        if self.cosine:  # cos(q, k)·s as (q/|q|·s)·(k/|k|): one matmul, any path below
            logit_scale = torch.clamp(w.logit_scale, max=math.log(1.0 / 0.01)).exp()  # (kept heads, 1, 1)
            cosine, start = [], 0
            for q, k, v in out:
                s = logit_scale[start:start + q.shape[1]]
                start += q.shape[1]
                cosine.append((F.normalize(q, dim=-1) * s, F.normalize(k, dim=-1), v))
            out, scale = cosine, 1.0
        if is_causal:  # as in timm's manual path, a causal mask takes precedence over attn_mask
            attn_mask, is_causal = torch.ones(N, N, dtype=torch.bool, device=x.device).tril(), False
        manual = (self.transform is not None or dim_mask is not None or key_bias is not None
                  or not self.fused_attn)
        outs = (self._manual(out, bias, attn_mask, mask, key_bias, scale) if manual
                else self._fused(out, bias, attn_mask, mask, scale))
        merged = outs[0].transpose(1, 2).flatten(2) if len(outs) == 1 else torch.cat(
            [o.transpose(1, 2).flatten(2) for o in outs], dim=-1)
        return self.proj_drop(norm_linear(self.norm, w.proj, merged))

    def _rotate(self, x: Tensor, rope: Tensor, heads: list[int]) -> Tensor:
        per_head = rope.dim() >= 3 and rope.shape[-3] == self.num_heads  # mixed RoPE: one table per head
        if per_head and heads != list(range(self.num_heads)):
            rope = rope.index_select(-3, torch.as_tensor(heads, device=rope.device))
        n = self.rope_prefix
        return torch.cat([x[:, :, :n], apply_rot_embed_cat(x[:, :, n:], rope, half=self.rotate_half)], dim=2)

    def _bias_table(self, w: nn.Module) -> Tensor | None:
        cpb = getattr(w, "cpb_mlp", None)
        if cpb is not None:  # Swin V2: the table is an MLP of the window's log-spaced relative coordinates
            return 16 * torch.sigmoid(cpb(self.relative_coords_table).view(-1, cpb[-1].out_features))
        return getattr(w, "relative_position_bias_table", None)

    def _fused(self, groups: list[tuple[Tensor, Tensor, Tensor]], bias: Tensor | None, attn_mask: Tensor | None,
               mask: Tensor | None, scale: float) -> list[Tensor]:
        drop = self.attn_drop.p if self.training else 0.0
        outs, start = [], 0
        for q, k, v in groups:
            heads = q.shape[1]
            group_mask = attn_mask
            if bias is not None:
                group_mask = bias[start:start + heads].unsqueeze(0)  # this group's bias columns
                if mask is not None:  # per window, repeated over the batch as timm's fused path does
                    nw = mask.shape[0]
                    group_mask = mask_windows(group_mask.expand(nw, -1, -1, -1), mask)
                    group_mask = group_mask.unsqueeze(0).expand(q.shape[0] // nw, -1, -1, -1, -1).flatten(0, 1)
            elif mask is not None:
                nw = mask.shape[0]
                group_mask = mask_windows(q.new_zeros(nw, heads, *mask.shape[1:]), mask)
                group_mask = group_mask.unsqueeze(0).expand(q.shape[0] // nw, -1, -1, -1, -1).flatten(0, 1)
            start += heads
            outs.append(F.scaled_dot_product_attention(q, k, v, attn_mask=group_mask, dropout_p=drop, scale=scale))
        return outs

    def _manual(self, groups: list[tuple[Tensor, Tensor, Tensor]], bias: Tensor | None, attn_mask: Tensor | None,
                mask: Tensor | None, key_bias: Tensor | None, scale: float) -> list[Tensor]:
        attn = torch.cat([(q * scale) @ k.transpose(-2, -1) for q, k, _ in groups], 1)
        mixing = self.transform is not None
        if mixing and self.mixed_heads is not None:
            # Every head keeps a logit map (its bias alone for heads without dims): the H×H mixes stay as trained.
            B, _, N, M = attn.shape
            attn = attn.new_zeros(B, self.num_heads, N, M).index_copy(1, self.mixed_heads, attn)
        if bias is not None:
            attn = attn + bias.unsqueeze(0)
        if mixing:
            attn = self.transform.pre(attn)
        if attn_mask is not None:
            attn = attn.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else attn + attn_mask
        if mask is not None:
            attn = mask_windows(attn, mask)
        if key_bias is not None:
            attn = attn + key_bias
        attn = attn.softmax(dim=-1)
        if mixing:
            attn = self.transform.post(attn)  # no bias: exact zeros stay zero
            if self.mixed_heads is not None:
                attn = attn.index_select(1, self.mixed_heads)
        attn = self.attn_drop(attn)
        outs, start = [], 0
        for _, _, v in groups:
            outs.append(attn[:, start:start + v.shape[1]] @ v)
            start += v.shape[1]
        return outs

    def set_window_size(self, *args, **kwargs) -> None:
        raise VitCompressError("a compressed Swin cannot change its window size (its bias tables are shared or "
                               "sliced); resize the original model, then compress it")

    def extra_repr(self) -> str:
        window = f", window_size={self.window_size}" if self.window_size is not None else ""
        widths = f"head_dims={self.head_dims}" if len(set(self.head_dims)) > 1 or self.head_dims[0] != self.head_dim \
            else f"num_heads={self.num_heads}, head_dim={self.head_dim}"
        return f"{widths}, scale={self.scale:.4g}{window}"


def slice_linear(linear: nn.Linear, out_index: list[int] | None = None, in_index: list[int] | None = None
                 ) -> nn.Linear:
    """A new Linear with only the given output rows / input columns (weights copied)."""
    if out_index is None and in_index is None:
        raise ValueError("slice_linear needs out_index or in_index")
    weight = linear.weight
    if out_index is not None:
        weight = weight[torch.as_tensor(out_index, dtype=torch.long, device=weight.device)]
    if in_index is not None:
        weight = weight[:, torch.as_tensor(in_index, dtype=torch.long, device=weight.device)]
    grad = linear.weight.requires_grad
    # A 1x1 placeholder on meta, then assigned: no init work (and no warning for a zero-width layer).
    new = nn.Linear(1, 1, bias=linear.bias is not None, device="meta")
    new.out_features, new.in_features = weight.shape
    new.weight = nn.Parameter(weight.detach(), requires_grad=grad)  # indexing made a fresh tensor
    if linear.bias is not None:
        bias = linear.bias
        if out_index is not None:
            bias = bias[torch.as_tensor(out_index, dtype=torch.long, device=bias.device)]
        new.bias = nn.Parameter(bias.detach().clone() if out_index is None else bias.detach(), requires_grad=grad)
    return new


def slice_qkv(qkv: nn.Linear, kept: list[list[int]], head_dim: int) -> nn.Linear:
    """qkv rows of the kept dims, group by group, each group as [q | k | v] of its heads (see QKV_LAYOUT)."""
    width = len(kept) * head_dim
    rows = [part * width + h * head_dim + e for _, heads in width_groups(kept) for part in range(3)
            for h in heads for e in kept[h]]
    return slice_linear(qkv, out_index=rows)


def slice_proj(proj: nn.Linear, kept: list[list[int]], head_dim: int) -> nn.Linear:
    return slice_linear(proj, in_index=[h * head_dim + e for h in head_order(kept) for e in kept[h]])


QKV_MODULES = ("qkv", "q_proj", "k_proj", "v_proj", "proj", "cpb_mlp")
QKV_BIASES = ("q_bias", "v_bias")


def attention_weights(attn: nn.Module) -> dict[str, nn.Module | nn.Parameter | Tensor]:
    """The weights of an attention: its q/k/v and output projections and Swin V2's position-bias MLP (modules),
    EVA's and Swin V2's separate q/v biases, Swin's relative-position bias table and Swin V2's logit scales
    (parameters)."""
    out: dict[str, nn.Module | nn.Parameter | Tensor] = {}
    for name in QKV_MODULES:
        module = getattr(attn, name, None)
        if isinstance(module, nn.Module):
            out[name] = module
    for name in (*QKV_BIASES, "relative_position_bias_table", "logit_scale"):
        param = getattr(attn, name, None)
        if isinstance(param, nn.Parameter):
            out[name] = param
    return out  # EVA's k bias is a zero buffer: `project` uses zeros


def qkv_projection(attn: nn.Module, x: Tensor, parts: str = "qkv") -> Tensor:
    """The q, k and/or v `parts` of every head, (..., N, len(parts) · attention dims) in that order, from an
    attention's input, whatever its projection layout (fused, fused with separate q/v biases, or separate)."""
    width = attn.num_heads * head_dim_of(attn)
    out = []
    for part in parts:
        i = "qkv".index(part)
        separate = getattr(attn, f"{part}_proj", None)
        if separate is not None:
            out.append(separate(x))
            continue
        bias = getattr(attn, f"{part}_bias", None) if getattr(attn, "q_bias", None) is not None else None
        if bias is None and attn.qkv.bias is not None:
            bias = attn.qkv.bias[i * width:(i + 1) * width]
        out.append(F.linear(x, attn.qkv.weight[i * width:(i + 1) * width], bias))
    return out[0] if len(out) == 1 else torch.cat(out, dim=-1)


def qkv_bias_parts(attn: nn.Module) -> int:
    """How many of q, k, v have a bias: 3 (fused qkv with bias), 2 (EVA: q and v), 0, or per separate projection."""
    qkv = getattr(attn, "qkv", None)
    if qkv is not None:
        return 3 if qkv.bias is not None else 2 * (getattr(attn, "q_bias", None) is not None)
    return sum(getattr(attn, n).bias is not None for n in ("q_proj", "k_proj", "v_proj"))


def slice_attention(holder: nn.Module, kept: list[list[int]], head_dim: int, mixing: bool) -> None:
    """Keep only the `kept` head dims of the attention weights `holder` has (an attention or a shared group)."""
    fused_bias = getattr(holder, "q_bias", None) is not None
    if (getattr(holder, "qkv", None) is None or fused_bias) and len(width_groups(kept)) > 1:
        raise VitCompressError("this attention has separate q/k/v projections or biases, so its heads are kept or "
                               "removed whole; select whole heads (every kept head keeps all its dims)")
    if getattr(holder, "qkv", None) is not None:
        holder.qkv = slice_qkv(holder.qkv, kept, head_dim)
    # One width group (heads whole): q, k and v each keep these rows, in layout order.
    rows = [h * head_dim + e for h in head_order(kept) for e in kept[h]]
    for name in ("q_proj", "k_proj", "v_proj"):
        if getattr(holder, name, None) is not None:
            setattr(holder, name, slice_linear(getattr(holder, name), out_index=rows))
    index = torch.as_tensor(rows, dtype=torch.long)
    for name in QKV_BIASES:
        bias = getattr(holder, name, None)
        if bias is not None:
            setattr(holder, name, nn.Parameter(bias.detach()[index.to(bias.device)], requires_grad=bias.requires_grad))
    holder.proj = slice_proj(holder.proj, kept, head_dim)
    table = getattr(holder, "relative_position_bias_table", None)
    if table is not None:
        holder.relative_position_bias_table = slice_table(table, kept, mixing)
    order = torch.as_tensor(head_order(kept), dtype=torch.long)
    scale = getattr(holder, "logit_scale", None)
    if scale is not None:  # one per kept head, in layout order (it scales the kept heads' logits)
        holder.logit_scale = nn.Parameter(scale.detach()[order.to(scale.device)], requires_grad=scale.requires_grad)
    cpb = getattr(holder, "cpb_mlp", None)
    if cpb is not None and not mixing:  # its last Linear gives one table column per head
        cpb[-1] = slice_linear(cpb[-1], out_index=head_order(kept))


def slice_table(table: nn.Parameter, kept: list[list[int]], mixing: bool) -> nn.Parameter:
    """A bias table's columns of the kept heads in layout order (all columns, as they are, with head mixing)."""
    if mixing:
        return table
    order = torch.as_tensor(head_order(kept), dtype=torch.long, device=table.device)
    return nn.Parameter(table.detach()[:, order], requires_grad=table.requires_grad)
