"""Token masks are exact: a dropped token influences nothing, stays dropped, and gradients stay finite."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import vitcompress as vc

TOKEN_VARIANTS = ["vit", "deit_distilled", "reg_tokens", "avg_pool_no_cls", "reg4_gap_fc_norm"]


def patch_pixels(model, position: int) -> tuple[slice, slice]:
    gw = model.patch_embed.grid_size[1]
    ph, pw = model.patch_embed.patch_size
    r, c = divmod(position, gw)
    return slice(r * ph, (r + 1) * ph), slice(c * pw, (c + 1) * pw)


@pytest.mark.parametrize("variant", TOKEN_VARIANTS, indirect=True)
def test_a_token_dropped_at_layer_0_has_no_influence(make_vit, variant, perturb, images):
    masked = vc.attach_masks(perturb(make_vit(variant)), vc.SlimConfig(attn=False, mlp=False, tokens=True)).eval()
    n = masked.patch_embed.num_patches
    with torch.no_grad():
        masked.blocks[0].token_mask[: n // 2] = -1.0  # v = 0: dropped at layer 0, so for good
        masked.blocks[1].token_mask[: n // 2] = 5.0  # a later "keep" cannot revive a dropped token
        base = masked(images)
        for position in (0, n // 2 - 1):
            changed = images.clone()
            rows, cols = patch_pixels(masked, position)
            changed[:, :, rows, cols] += 10 * torch.randn_like(changed[:, :, rows, cols])
            assert_close(masked(changed), base, rtol=0, atol=0)
        # A kept token does influence the output (the test above is not vacuous).
        changed = images.clone()
        rows, cols = patch_pixels(masked, n - 1)
        changed[:, :, rows, cols] += 10.0
        assert not torch.allclose(masked(changed), base)


def test_a_token_dropped_at_a_later_layer_leaves_the_other_tokens_alone(make_vit, perturb, images):
    """After layer l drops token j, perturbing j's state at layer l's input changes no other token."""
    masked = vc.attach_masks(perturb(make_vit("reg_tokens")), vc.SlimConfig(tokens=True)).eval()
    with torch.no_grad():
        masked.blocks[2].token_mask[5] = -2.0
    p = masked.num_prefix_tokens
    inputs = {}
    masked.blocks[2].register_forward_pre_hook(lambda _m, args: inputs.update(x=args[0]))  # returns None
    with torch.no_grad():
        base = masked.forward_features(images)
        x = inputs.pop("x")
        keep = masked.blocks.keeps()
        x_changed = x.clone()
        x_changed[:, p + 5] += 10.0
        out = x_changed
        for i in range(2, len(masked.blocks)):
            out = masked.blocks[i](out, torch.cat([torch.ones(p), keep[i]]))
        out = masked.norm(out)
    others = [i for i in range(base.shape[1]) if i != p + 5]
    assert_close(out[:, others], base[:, others], rtol=0, atol=0)
    assert_close(out[:, p + 5], masked.norm(x_changed[:, p + 5]))  # its state froze where it was dropped


def test_keep_is_cumulative_and_exactly_one_at_init(make_vit):
    masked = vc.attach_masks(make_vit("vit"), vc.SlimConfig(tokens=True))
    keeps = masked.blocks.keeps()
    assert all(torch.equal(k, torch.ones_like(k)) for k in keeps)
    with torch.no_grad():
        masked.blocks[0].token_mask[3] = 0.5
        masked.blocks[1].token_mask[3] = -0.1
        masked.blocks[2].token_mask[3] = 9.0
    keeps = masked.blocks.keeps()
    assert 0 < keeps[0][3] < 1 and keeps[1][3] == 0 and keeps[2][3] == 0


def test_gradients_are_finite_with_dropped_tokens(make_vit, randomize, images):
    masked = randomize(vc.attach_masks(make_vit("avg_pool_no_cls"), vc.SlimConfig(tokens=True))).train()
    assert any((k == 0).any() for k in masked.blocks.keeps())
    masked(images).logsumexp(-1).sum().backward()
    for name, p in masked.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert masked.blocks[0].token_mask.grad.abs().sum() > 0


def test_direct_block_calls_are_refused_with_token_masks(make_vit):
    masked = vc.attach_masks(make_vit("vit"), vc.SlimConfig(tokens=True))
    with pytest.raises(vc.VitCompressError, match="through model.blocks"):
        masked.blocks[0](torch.zeros(1, 17, 32))
