"""The search objective: ℓ1 per mask type (optionally MACs-weighted), and a few real training steps."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import vitcompress as vc
from vitcompress.slim.cost import element_macs, structure_of
from vitcompress.slim.sparsity import element_weights, slim_param_groups, sparsity_loss
from vitcompress.train import TrainConfig, fit


def test_loss_is_the_weighted_l1_of_each_type(make_vit, randomize):
    masked = randomize(vc.attach_masks(make_vit("vit"), vc.SlimConfig(tokens=True)))
    cfg = vc.SparsityConfig(l1_attn=2e-4, l1_mlp=5e-5, l1_tokens=1e-4)
    loss, parts = sparsity_loss(masked, element_weights(masked, cfg))
    attn = sum(b.attn.dim_mask.abs().sum() for b in masked.blocks)
    mlp = sum(b.mlp.hidden_mask.abs().sum() for b in masked.blocks)
    tokens = sum((torch.tanh(b.token_mask) / math.tanh(3.0)).abs().sum() for b in masked.blocks)
    torch.testing.assert_close(loss, 2e-4 * attn + 5e-5 * mlp + 1e-4 * tokens)
    assert set(parts) == {"mask_attn", "mask_mlp", "mask_tokens"}


def test_macs_weighting_keeps_the_type_mean_and_follows_macs(make_vit):
    mx = vc.multiplex(make_vit("reg_tokens"), vc.MultiplexConfig(groups=[[0, 1, 2], [3]], mlp_transform=False))
    masked = vc.attach_masks(mx, vc.SlimConfig(tokens=True))
    cfg = vc.SparsityConfig(macs_weighted=True)
    weights = element_weights(masked, cfg)
    # A group of 3 layers controls 3x the MACs of a single layer; the mean weight stays the paper's.
    assert weights["attn"][0] == pytest.approx(3 * weights["attn"][1])
    assert sum(weights["attn"]) / 2 == pytest.approx(cfg.l1_attn)
    # Dropping a token early removes it from every later layer: early token masks weigh more.
    assert weights["tokens"] == sorted(weights["tokens"], reverse=True)
    macs = element_macs(structure_of(masked))["tokens"]
    assert weights["tokens"][0] / weights["tokens"][-1] == pytest.approx(macs[0] / macs[-1])


def test_search_steps_train_masks_and_weights(make_vit, images):
    masked = vc.attach_masks(make_vit("vit"), vc.SlimConfig(tokens=True))
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 3, 32, 32, generator=gen), torch.randint(0, 10, (32,), generator=gen))
    loader = DataLoader(data, batch_size=8)
    sparsity = vc.SparsityConfig(l1_attn=1e-2, l1_mlp=1e-2, l1_tokens=1e-2, mask_lr=5e-2)
    train = TrainConfig(epochs=2, lr=1e-3, warmup_epochs=0, log_every=1)
    before = {n: p.detach().clone() for n, p in masked.named_parameters()}
    objective = vc.SlimObjective(masked, config=sparsity)
    history = fit(masked, loader, None, objective, train, out_dir=None,
                  param_groups=slim_param_groups(masked, train, sparsity), progress=False)
    record = history.records[-1]
    assert record["loss"] == pytest.approx(record["task"] + record["sparsity"], rel=1e-4)
    changed = {n for n, p in masked.named_parameters() if not torch.equal(p, before[n])}
    assert {"blocks.0.attn.dim_mask", "blocks.0.mlp.hidden_mask", "blocks.0.token_mask",
            "blocks.0.attn.qkv.weight"} <= changed
    # The ℓ1 pressure shrinks the masks on average.
    assert record["mask_attn"] < 1.0 and record["mask_mlp"] < 1.0


def test_objective_needs_a_masked_model(make_vit):
    with pytest.raises(vc.VitCompressError, match="masked model"):
        vc.SlimObjective(make_vit("vit"))
    with pytest.raises(vc.VitCompressError, match="mask_lr"):
        vc.SparsityConfig(mask_lr=0)
    with pytest.raises(vc.VitCompressError, match="l1_attn"):
        vc.SparsityConfig(l1_attn=-1)
