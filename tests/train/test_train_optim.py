import pytest
import torch
from timm.optim import param_groups_weight_decay
from torch import nn
from train_toys import tiny_vit

from vitcompress.train import TrainConfig, build_optimizer, build_scheduler, make_param_groups


class MaskedViT(nn.Module):
    """A tiny ViT plus a slimming mask parameter (2-D, so only its name keeps it out of decay) and a BEiT-style
    `mask_token`, which is a weight with "mask" in its name, not a mask."""

    def __init__(self):
        super().__init__()
        self.vit = tiny_vit()
        self.dim_mask = nn.Parameter(torch.ones(2, 2))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 8))

    def no_weight_decay(self):
        return {f"vit.{n}" for n in self.vit.no_weight_decay()}


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_default_groups_exclude_norms_biases_tokens_and_masks_from_decay():
    model = MaskedViT()
    groups = {g["name"]: g for g in make_param_groups(model, weight_decay=0.05)}
    decayed = _names(model, groups["decay"])
    assert "dim_mask" in _names(model, groups["no_decay"])
    assert "vit.pos_embed" not in decayed and "vit.cls_token" not in decayed
    assert all(p.ndim >= 2 for n, p in model.named_parameters() if n in decayed)
    # Apart from masks, the split is exactly timm's (as create_optimizer_v2 calls it).
    timm_groups = param_groups_weight_decay(model.vit, 0.05, no_weight_decay_list=model.vit.no_weight_decay())
    timm_decayed = [g for g in timm_groups if g["weight_decay"]][0]
    assert decayed == {f"vit.{n}" for n in _names(model.vit, timm_decayed)} | {"mask_token"}


def test_mask_lr_gives_masks_their_own_group():
    model = MaskedViT()
    groups = {g["name"]: g for g in make_param_groups(model, weight_decay=0.05, mask_lr=1e-2)}
    assert _names(model, groups["mask"]) == {"dim_mask"}
    assert groups["mask"]["weight_decay"] == 0 and groups["mask"]["lr"] == 1e-2
    assert "dim_mask" not in _names(model, groups["no_decay"])


def test_schedule_keeps_every_group_lr_ratio():
    model = MaskedViT()
    cfg = TrainConfig(epochs=3, lr=1e-3, min_lr=1e-4, warmup_epochs=1)
    groups = make_param_groups(model, cfg.weight_decay, mask_lr=1e-2)
    optimizer = build_optimizer(model, cfg, groups)
    steps_per_epoch = 5
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    by_name = {g["name"]: g for g in optimizer.param_groups}
    seen = []
    for step in range(1, cfg.epochs * steps_per_epoch + 1):
        seen.append(by_name["decay"]["lr"])
        assert by_name["mask"]["lr"] == pytest.approx(10 * by_name["decay"]["lr"], rel=1e-12)
        assert by_name["no_decay"]["lr"] == pytest.approx(by_name["decay"]["lr"], rel=1e-12)
        scheduler.step_update(step)
    assert seen[0] == pytest.approx(cfg.min_lr)  # warmup starts at min_lr ...
    assert max(seen) == pytest.approx(cfg.lr)  # ... peaks at lr ...
    assert by_name["decay"]["lr"] == pytest.approx(cfg.min_lr)  # ... and decays to min_lr after the last step
    assert by_name["mask"]["lr"] == pytest.approx(10 * cfg.min_lr)
    assert seen == sorted(seen[: steps_per_epoch + 1]) + sorted(seen[steps_per_epoch + 1 :], reverse=True)


def test_caller_groups_are_not_mutated():
    model = MaskedViT()
    groups = [{"params": list(model.vit.parameters()), "lr": 2e-3}, {"params": [model.dim_mask], "lr": 1e-3}]
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3), groups)
    assert groups[0]["lr"] == 2e-3 and "lr_scale" not in groups[0]
    assert [g["lr_scale"] for g in optimizer.param_groups] == [2.0, 1.0]
