"""A norm inside the attention or MLP (timm's `scale_attn_norm`/`scale_attn_inner`, `scale_mlp_norm`/`scale_mlp`)
after slimming: exact, though it normalises over every dim of the layer it sits in.

In the masked model a removed attention dim or MLP unit is an exact zero entering a LayerNorm over the full
width F, and the linear after it (proj, fc2) reads all F normalised values. With μ and σ the statistics of that
full width, a removed entry r comes out as (0 - μ)/σ·g_r + b_r, so the linear's output is

    W_K·y_K + b  +  (-μ/σ)·(W_R·g_R)  +  W_R·b_R

with y_K the kept entries normalised by the full-width statistics. The extracted layer computes exactly this: μ and
σ from the kept entries with F in the denominators (the zeros add nothing to the sums), the kept entries through
the sliced linear, and the removed ones as a rank-one term: one vector u = W_R·g_R scaled per token by -μ/σ, plus
a constant c = W_R·b_R. u and c belong to the layer (its norm is per layer even when the linear is a multiplexed
group's), so they live here, and are trainable like the weights they stand for.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vitcompress.errors import VitCompressError


def is_layer_norm(norm: nn.Module) -> bool:
    """A LayerNorm over the last dim (torch's or timm's subclass): the norms `SlicedNorm` can slice exactly."""
    return isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 1


def check_sliceable(norm: nn.Module, where: str, option: str, mask: str) -> None:
    """Refuse, in one line, an inner norm that `SlicedNorm` cannot reproduce (it handles LayerNorm only);
    `mask` is the SlimConfig field ("attn" or "mlp") to turn off instead."""
    if not isinstance(norm, nn.Identity) and not is_layer_norm(norm):
        raise VitCompressError(
            f"{where} normalises inside the layer ({option}) with {type(norm).__name__}; slimming through such a "
            f"norm is exact for a LayerNorm only: use SlimConfig({mask}=False)"
        )


class SlicedNorm(nn.Module):
    """LayerNorm over a width of which only the `kept` entries remain (see the module docstring).

    `forward` returns the normalised kept entries and the per-token coefficient -μ/σ of the removed ones; use
    `norm_linear` to apply it with the linear that follows.
    """

    def __init__(self, norm: nn.LayerNorm, kept: list[int], linear: nn.Linear) -> None:
        super().__init__()
        width = int(norm.normalized_shape[0])
        self.width, self.kept_width, self.eps = width, len(kept), float(norm.eps)
        keep = torch.as_tensor(kept, dtype=torch.long, device=linear.weight.device)
        removed = torch.as_tensor(sorted(set(range(width)) - set(kept)), dtype=torch.long,
                                  device=linear.weight.device)
        gain = norm.weight if norm.weight is not None else torch.ones(width, device=linear.weight.device)
        with torch.no_grad():
            w_removed = linear.weight[:, removed]
            self.weight = nn.Parameter(gain.detach()[keep].clone()) if norm.weight is not None else None
            self.bias = nn.Parameter(norm.bias.detach()[keep].clone()) if norm.bias is not None else None
            self.removed_weight = nn.Parameter(w_removed @ gain.detach()[removed])
            self.removed_bias = (nn.Parameter(w_removed @ norm.bias.detach()[removed])
                                 if norm.bias is not None else None)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        missing = self.width - x.shape[-1]
        mean = x.sum(-1, keepdim=True) / self.width
        centered = x - mean
        # The removed entries are zeros: each adds (0 - μ)² to the variance's sum.
        var = (centered.square().sum(-1, keepdim=True) + missing * mean.square()) / self.width
        inv_std = torch.rsqrt(var + self.eps)
        y = centered * inv_std
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y, -mean * inv_std

    def extra_repr(self) -> str:
        return f"kept={self.kept_width}/{self.width}, eps={self.eps}"


def norm_linear(norm: nn.Module, linear: nn.Module, x: Tensor) -> Tensor:
    """`linear(norm(x))`, for a plain norm or a `SlicedNorm` (whose removed entries reach `linear` as u and c)."""
    if not isinstance(norm, SlicedNorm):
        return linear(norm(x))
    y, coefficient = norm(x)
    out = linear(y) + coefficient * norm.removed_weight
    return out if norm.removed_bias is None else out + norm.removed_bias


def slice_norm(norm: nn.Module, kept: list[int], linear: nn.Linear) -> nn.Module:
    """The norm to use once only `kept` of its entries remain: itself when nothing was removed (or it is no norm),
    else a `SlicedNorm` built from it and the full (not yet sliced) `linear` after it."""
    if isinstance(norm, nn.Identity) or len(kept) == int(norm.normalized_shape[0]):
        return norm
    return SlicedNorm(norm, kept, linear)
