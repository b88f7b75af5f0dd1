"""SlicedNorm: a LayerNorm whose removed entries are zeros, then a linear, computed from the kept entries only."""

from __future__ import annotations

import pytest
import torch
from timm.layers import RmsNorm
from torch import nn
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.models.sliced_norm import SlicedNorm, check_sliceable, norm_linear, slice_norm


def _layer_norm(width: int, affine: bool, bias: bool) -> nn.LayerNorm:
    norm = nn.LayerNorm(width, eps=1e-6, elementwise_affine=affine, bias=bias)
    if affine:
        with torch.no_grad():
            norm.weight.normal_()
            if bias:
                norm.bias.normal_()
    return norm


@pytest.mark.parametrize("affine, bias", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("kept", [[0, 3, 4, 9], [], list(range(1, 12))])
def test_kept_entries_and_the_rank_one_term_equal_the_full_norm_on_zeros(affine, bias, kept):
    torch.manual_seed(0)
    norm, linear = _layer_norm(12, affine, bias), nn.Linear(12, 5)
    x = torch.randn(3, 7, 12)
    zeros = torch.zeros_like(x)
    zeros[..., kept] = x[..., kept]
    reference = linear(norm(zeros))
    sliced = slice_norm(norm, kept, linear)
    assert isinstance(sliced, SlicedNorm)
    small = nn.Linear(len(kept), 5)
    with torch.no_grad():
        small.weight.copy_(linear.weight[:, kept])
        small.bias.copy_(linear.bias)
    assert_close(norm_linear(sliced, small, x[..., kept]), reference)


def test_nothing_removed_keeps_the_norm_itself():
    norm, linear = _layer_norm(8, True, True), nn.Linear(8, 4)
    assert slice_norm(norm, list(range(8)), linear) is norm
    assert slice_norm(nn.Identity(), [1, 2], linear).__class__ is nn.Identity


def test_other_inner_norms_are_refused_in_one_line():
    with pytest.raises(vc.VitCompressError, match=r"block 3 .*\(scale_mlp\) with RmsNorm.*SlimConfig\(mlp=False\)"):
        check_sliceable(RmsNorm(8), "block 3", "scale_mlp", "mlp")
    check_sliceable(nn.Identity(), "block 0", "scale_mlp", "mlp")  # no norm: nothing to refuse
