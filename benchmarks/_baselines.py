"""The two structured-pruning baselines of the slimming benchmark, each as a `vitcompress.Selection`.

Both prune what ViT-Slim prunes (attention dims per head and MLP hidden units; never the embedding width) down to a
MACs budget, and both end as `vc.extract(teacher, selection)`: the same sliced modules, the same save/load and the
same fine-tuning as the ViT-Slim models, so the benchmark compares what is kept, not how it is executed.

    uniform_selection   every layer keeps the same number of dims per head and of MLP units, the ones with the
                        largest weight magnitude (ℓ1 norm of their qkv rows / fc1 row)
    taylor_prune        Torch-Pruning's MetaPruner with GroupTaylorImportance on the timm model itself; the dims and
                        units it kept are read back off the pruned weights into a Selection, and the model extracted
                        from it is checked against Torch-Pruning's own pruned model

Torch-Pruning on current timm (1.0.31), what this module does about its traps:
- Its documented ViT recipe rebinds `Attention.forward` to a `forward(self, x)`; timm's `Block` now calls
  `attn(x, attn_mask=...)`, so that recipe fails with a TypeError. timm's own forward
  reshapes by `self.attn_dim`, so no rebinding is needed: after pruning we only set `num_heads`, `head_dim` and
  `attn_dim`.
- After head-dim pruning, timm's fused path calls SDPA without `scale`, i.e. 1/√(new head_dim), while the manual
  path multiplies by the stale `self.scale` = 1/√(original head_dim). The two paths of one pruned model disagree;
  `taylor_prune` measures by how much. Only the original scale computes, on the kept dims, what the unpruned model
  computed; that is what `vc.extract` keeps, and the check runs the pruned model on its manual path.
- `MetaPruner`'s channel-group arguments are mutable default dicts that it updates (`out_channel_groups.update(
  num_heads)`), so every pruner built without them leaks its modules into the next; we always pass fresh dicts.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import vitcompress as vc
from vitcompress.models.layers import transformer_layers
from vitcompress.slim.cost import structure_of

# ------------------------------------------------------------------------------------------------ shared pieces


def macs_ratio(model: nn.Module, size: Sequence[int], full_macs: int) -> float:
    return vc.count_macs(model, size) / full_macs


def _top(scores: Tensor, k: int) -> list[int]:
    """Indices of the `k` largest scores, ascending (ties: lower index first)."""
    order = sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


# ------------------------------------------------------------------------------------------- uniform magnitude


def magnitude_scores(model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    """Per layer (ViT blocks, or Swin's over its stages): (heads, head_dim) ℓ1 norms of each attention dim's q, k
    and v rows; (hidden,) ℓ1 norms of the fc1 rows."""
    attn, mlp = [], []
    for blk in transformer_layers(model):
        a = blk.attn
        rows = a.qkv.weight.detach().abs().sum(1).view(3, a.num_heads, -1)
        attn.append(rows.sum(0))
        mlp.append(blk.mlp.fc1.weight.detach().abs().sum(1))
    return attn, mlp


def uniform_selection(model: nn.Module, target: float) -> vc.Selection:
    """Every layer keeps the same share of each head's dims and of its MLP units (largest ℓ1 first), at most
    `target` of the MACs.

    The share s is the largest with k = round(s·head_dim) and m = round(s·hidden) in every layer within budget;
    one step of k moves the MACs by several percent on small models, so the MLP share is then raised alone as far
    as the budget allows. Costs are the analytic ones of `vitcompress.slim.cost` (what `count_macs` measures on
    the extracted model), for ViT and Swin alike.
    """
    s = structure_of(model)
    full = s.cost(*s.full())[0]
    attn_scores, mlp_scores = magnitude_scores(model)
    count = lambda share, n: int(share * n + 0.5)

    def selection(attn_share: float, mlp_share: float) -> vc.Selection:
        return vc.Selection(
            attn=[[_top(layer[h], count(attn_share, layer.shape[1])) for h in range(layer.shape[0])]
                  for layer in attn_scores],
            mlp=[_top(layer, count(mlp_share, layer.numel())) for layer in mlp_scores])

    def fits(attn_share: float, mlp_share: float) -> bool:
        return selection(attn_share, mlp_share).cost(s)[0] <= target * full

    def largest(fit: Any, lo: float) -> float:
        hi = 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if fit(mid) else (lo, mid)
        return lo

    if not fits(0.0, 0.0):
        raise ValueError(f"MACs target {target} is below what removing every attention dim and MLP unit leaves")
    share = largest(lambda x: fits(x, x), 0.0)
    mlp_share = largest(lambda x: fits(share, x), share)
    sel = selection(share, mlp_share)
    macs, params = sel.cost(s)
    sel.info = {"method": "uniform ℓ1 magnitude", "target": {"macs": target}, "attn_share": share,
                "mlp_share": mlp_share, "macs": macs, "params": params, "macs_ratio": macs / full}
    return sel


def prune_saved(teacher_dir: Path, out: Path, method: str, target: float, seed: int, data: str,
                taylor_batches: int) -> dict[str, Any]:
    """Cut a saved teacher to `target` of its MACs by `method` ("tp": Torch-Pruning Taylor, global ranking;
    "uniform": `uniform_selection`) and save the extracted model with the teacher's data settings."""
    from vitcompress.export import read_spec

    teacher = vc.load(teacher_dir).eval()
    norm = read_spec(teacher_dir)["extra"]["data"]
    size = tuple(norm["input_size"])
    train, val, _ = vc.build_loaders(data, input_size=size, seed=seed, mean=norm["mean"], std=norm["std"])
    if method == "tp":
        batches = [b for _, b in zip(range(taylor_batches), train, strict=False)]
        _, selection, info = taylor_prune(teacher, batches, target, size, next(iter(val))[0])
    elif method == "uniform":
        selection = uniform_selection(teacher, target)
        info = dict(selection.info)
    else:
        raise ValueError(f"unknown baseline {method!r}: tp or uniform")
    small = vc.extract(teacher, selection).eval()
    info["top1_before_finetune"] = vc.evaluate(small, val)["top1"]
    info["macs_ratio"] = vc.count_macs(small, size) / vc.count_macs(teacher, size)
    vc.save(small, out, extra={"data": norm, "pruning": {k: v for k, v in info.items() if not isinstance(v, list)}})
    (out / "selection.json").write_text(json.dumps(selection.to_dict()))
    return info


# ------------------------------------------------------------------------------------------------ Torch-Pruning


def _set_heads(model: nn.Module, pruner: Any) -> None:
    for blk in model.blocks:
        a = blk.attn
        a.num_heads = pruner.num_heads[a.qkv]
        a.head_dim = a.qkv.out_features // (3 * a.num_heads)
        a.attn_dim = a.num_heads * a.head_dim  # timm 1.0.31 reshapes the attention output by attn_dim


TP_RANKINGS = ("global", "uniform", "isomorphic")


def taylor_gradients(teacher: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> nn.Module:
    """A copy of `teacher` holding the CE gradients summed over `batches`: what Taylor importance reads."""
    model = copy.deepcopy(teacher).train()  # no dropout / drop-path in the digits teacher: train == eval here
    model.zero_grad(set_to_none=True)
    for images, targets in batches:
        F.cross_entropy(model(images), targets).backward()
    return model


def tp_prune_once(with_grads: nn.Module, ratio: float, size: Sequence[int], ranking: str = "global") -> nn.Module:
    """A copy of `with_grads` (from `taylor_gradients`) pruned by Torch-Pruning's Taylor importance.

    Attention head dims and MLP hidden units are pruned. `ranking`: "global" (one threshold over all layers),
    "uniform" (the same ratio in every layer: Torch-Pruning's default) or "isomorphic" (global within groups of
    the same structure: attention apart from MLP).
    """
    import torch_pruning as tp

    if ranking not in TP_RANKINGS:
        raise ValueError(f"ranking={ranking!r} is not one of {TP_RANKINGS}")
    model = copy.deepcopy(with_grads)  # deepcopy drops .grad: copy the gradients over
    for p, src in zip(model.parameters(), with_grads.parameters(), strict=True):
        p.grad = None if src.grad is None else src.grad.clone()
    # Roots of the embedding-width group are ignored, so only the internal widths are pruned (as ViT-Slim does).
    ignored = [model.head, model.patch_embed, *(b.attn.proj for b in model.blocks),
               *(b.mlp.fc2 for b in model.blocks)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "unwrapped parameters" (pos_embed, cls_token): never pruned here
        pruner = tp.pruner.MetaPruner(
            model, torch.randn(1, *size), importance=tp.importance.GroupTaylorImportance(),
            global_pruning=ranking != "uniform", isomorphic=ranking == "isomorphic", pruning_ratio=ratio,
            ignored_layers=ignored,
            num_heads={b.attn.qkv: b.attn.num_heads for b in model.blocks},
            prune_num_heads=False, prune_head_dims=True,
            in_channel_groups={}, out_channel_groups={}, channel_groups={},  # fresh: TP mutates its defaults
        )
        pruner.step()
    _set_heads(model, pruner)
    model.zero_grad(set_to_none=True)
    return model.eval()


def _match_rows(pruned: Tensor, original: Tensor) -> list[int]:
    """Index in `original` of every row of `pruned` (rows are exact copies; Torch-Pruning keeps their order)."""
    out = []
    for row in pruned:
        hits = (original == row).all(dim=1).nonzero().flatten().tolist()
        if len(hits) != 1:
            raise RuntimeError(f"a pruned row matches {len(hits)} original rows; cannot read back the selection")
        out.append(hits[0])
    if out != sorted(out):
        raise RuntimeError("pruned rows are not in their original order")
    return out


def selection_from_pruned(teacher: nn.Module, pruned: nn.Module) -> vc.Selection:
    """The attention dims and MLP units a Torch-Pruning model kept, as a Selection on the unpruned teacher."""
    attn, mlp = [], []
    for t_blk, p_blk in zip(teacher.blocks, pruned.blocks, strict=True):
        ta, pa = t_blk.attn, p_blk.attn
        parts = [_match_rows(w, w0) for w, w0 in zip(pa.qkv.weight.detach().chunk(3), ta.qkv.weight.detach().chunk(3),
                                                      strict=True)]
        if not parts[0] == parts[1] == parts[2]:
            raise RuntimeError("Torch-Pruning kept different dims in q, k and v")
        heads = [[] for _ in range(ta.num_heads)]
        for flat in parts[0]:
            heads[flat // ta.head_dim].append(flat % ta.head_dim)
        attn.append(heads)
        mlp.append(_match_rows(p_blk.mlp.fc1.weight.detach(), t_blk.mlp.fc1.weight.detach()))
    return vc.Selection(attn=attn, mlp=mlp)


def taylor_prune(teacher: nn.Module, batches: list[tuple[Tensor, Tensor]], target: float, size: Sequence[int],
                 check_images: Tensor, ranking: str = "global", tolerance: float = 0.01, max_trials: int = 20
                 ) -> tuple[nn.Module, vc.Selection, dict[str, Any]]:
    """Torch-Pruning to `target` of the teacher's MACs (measured by `count_macs`), within `tolerance` below it.

    The pruning ratio is bisected; each trial prunes a fresh copy. Returns Torch-Pruning's own model (on its manual
    attention path, the original scale), the Selection read off it, and what was checked on the way.
    """
    full = vc.count_macs(teacher, size)
    with_grads = taylor_gradients(teacher, batches)
    lo, hi, best, trials = 0.0, 0.95, None, 0
    while trials < max_trials:
        trials += 1
        mid = (lo + hi) / 2
        model = tp_prune_once(with_grads, mid, size, ranking)
        got = macs_ratio(model, size, full)
        if got > target:
            lo = mid
            continue
        hi, best = mid, (mid, got, model)
        if got >= target * (1 - tolerance):
            break
    if best is None:
        raise RuntimeError(f"Torch-Pruning did not reach {target} of the MACs within {max_trials} trials")
    ratio, got, model = best
    selection = selection_from_pruned(teacher, model)
    small = vc.extract(teacher, selection).eval()
    with torch.no_grad():
        fused = model(check_images)  # timm's default fused path: SDPA's 1/sqrt(new head_dim)
        for blk in model.blocks:
            blk.attn.fused_attn = False  # manual path: self.scale, still the original head's
        manual = model(check_images)
        ours = small(check_images)
    torch.testing.assert_close(ours, manual, rtol=1e-4, atol=1e-4)
    info = {"method": f"Torch-Pruning GroupTaylorImportance, {ranking} ranking", "target": {"macs": target},
            "pruning_ratio": ratio, "trials": trials, "macs_ratio": got,
            "macs_ratio_extracted": macs_ratio(small, size, full),
            "max_abs_diff_extracted_vs_tp": float((ours - manual).abs().max()),
            "max_abs_diff_tp_fused_vs_manual": float((fused - manual).abs().max()),
            "head_dims": [b.attn.head_dim for b in model.blocks],
            "mlp_units": [b.mlp.fc1.out_features for b in model.blocks]}
    selection.info = {k: v for k, v in info.items() if k in ("method", "target", "pruning_ratio", "macs_ratio")}
    return model, selection, info
