"""`select`: turn searched mask values into a `Selection` that meets a budget in MACs, params or dim shares.

Scores. Attention and MLP elements score |mask value|; patch tokens score their cumulative keep K (the
running minimum over layers, so a token's score never rises with depth and every threshold keeps a nested set).
Ties (e.g. freshly attached masks, all 1) resolve to uniform structures: elements of equal score are taken rank
by rank across layers (and dim by dim across heads), tokens position by position in every layer.

Budgets.
    dims={"attn": a, "mlp": b, "tokens": t}   each type keeps its top share (a global threshold per type);
                                              types left out keep everything.
    macs=r or params=r, mode="share"          every masked type keeps the same share s, the largest s whose
                                              extracted model costs at most r of the original (bisection).
    macs=r or params=r, mode="joint"          one threshold over all mask values of all types (every mask is a
                                              multiplier that starts at 1, so values are compared as they are;
                                              dividing by the per-type ℓ1 weights would rank whole types by
                                              their weight alone while the masks are still near 1).
Costs are the analytic MACs/params of the extracted structure (`vitcompress.slim.cost`), so a new budget takes
milliseconds. At least one patch token is kept in every layer (the best-scored one at the last layer).

Equal heads (`equal_heads=True`). The threshold leaves heads of a layer with different widths, and the extracted
layer runs one attention call per distinct width: at small model sizes each call is a measurable share of the
time. With equal heads every head of an owner keeps the same w dims, its top w by score, with w the threshold's
kept dims of that owner over its heads, rounded: about the same dims per layer, one attention call per layer.
w never falls as the threshold keeps more, so the budget bisection still holds.

Hardware alignment (`multiple_of=k`, `multiple_of_tokens=t`). After the threshold (and equal heads), every head
width and MLP width is rounded to a multiple of k, every layer's sequence length to a multiple of t, each keeping
its best units (rules in `vitcompress.slim.align`). Rounding never falls as the threshold keeps more, so costs
stay monotone and the bisection meets the budget with the rounded widths.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models.spec import unwrap
from vitcompress.slim.align import align_groups, align_tokens, check_fits, check_multiple
from vitcompress.slim.attach import is_masked, mask_tensors
from vitcompress.slim.config import MASK_TYPES
from vitcompress.slim.cost import Structure, structure_of
from vitcompress.slim.selection import Selection

MODES = ("share", "joint")


class _Candidates:
    """Every mask element of one type as flat numpy arrays, and the order in which thresholds keep them.

    `shapes` are the owners' mask shapes (attn/mlp; they differ across Swin stages), laid out owner after owner.
    Units are rounded (equal heads, `multiple_of`) per group: `group` is each element's group (attn: its global
    head, mlp: its owner), `rank_in_group` its rank there (best score first, ties by index), `group_width` each
    group's full width. Tokens have `ranking` instead: per layer, the patch indices best first.
    """

    def __init__(self, score: np.ndarray, owner: np.ndarray, size: int | np.ndarray, order: np.ndarray,
                 shapes: list[tuple[int, ...]] | None = None, group: np.ndarray | None = None,
                 rank_in_group: np.ndarray | None = None, ranking: np.ndarray | None = None) -> None:
        self.score, self.owner, self.size, self.order = score, owner, size, order
        self.shapes, self.group, self.rank_in_group, self.ranking = shapes, group, rank_in_group, ranking
        self.group_width = None if group is None else np.bincount(group)

    def __len__(self) -> int:
        return len(self.score)

    def per_owner(self, flags: np.ndarray) -> list[np.ndarray]:
        """Flat per-element flags -> one array per owner, in the owner's mask shape."""
        assert self.shapes is not None
        offsets = np.cumsum([0] + [int(np.prod(shape)) for shape in self.shapes])
        return [flags[a:b].reshape(shape) for a, b, shape in zip(offsets[:-1], offsets[1:], self.shapes, strict=True)]


def _owner_arrays(masks: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """|values| flat, owner of each element, and each owner's |values| in its own shape."""
    vals = [m.detach().float().abs().cpu().numpy() for m in masks]
    owner = np.concatenate([np.full(v.size, o) for o, v in enumerate(vals)])
    return np.concatenate([v.ravel() for v in vals]), owner, vals


def _candidates(model: nn.Module, s: Structure) -> dict[str, _Candidates]:
    masks = mask_tensors(model)
    out = {}
    if "attn" in masks:
        score, o, vals = _owner_arrays(masks["attn"])  # per owner (heads, head_dim or 1)
        # Rank of an element in a dim-by-dim sweep over its owner's heads, as a fraction of the owner's elements:
        # ties (highest first) go dim by dim across heads, then across owners, so equal scores keep a uniform
        # share of every owner even when owners differ in width (Swin stages).
        grids = [np.indices(v.shape) for v in vals]
        rank = np.concatenate([((e * v.shape[0] + h) / v.size).ravel() for (h, e), v in zip(grids, vals, strict=True)])
        starts = np.cumsum([0] + [v.shape[0] for v in vals])
        head = np.concatenate([(h + starts[i]).ravel() for i, (h, _) in enumerate(grids)])
        # Attention dims per mask element, per owner: a whole head's (its owner's head dim) with per-head masks.
        size = np.array([s.head_dim_of(o) if s.per_head else 1 for o in range(len(vals))])
        # Rank of each dim within its head, best score first (ties by dim index): what equal heads keep.
        in_head = np.concatenate([_rank_best_first(v, axis=1).ravel() for v in vals])
        out["attn"] = _Candidates(score, o, size, np.lexsort((o, rank, -score)), [v.shape for v in vals], head,
                                  in_head)
    if "mlp" in masks:
        score, o, vals = _owner_arrays(masks["mlp"])  # per owner (hidden,)
        rank = np.concatenate([np.arange(v.size) / v.size for v in vals])
        in_owner = np.concatenate([_rank_best_first(v, axis=0) for v in vals])
        out["mlp"] = _Candidates(score, o, 1, np.lexsort((o, rank, -score)), [v.shape for v in vals], o, in_owner)
    if "tokens" in masks:
        with torch.no_grad():
            keeps = torch.stack(unwrap(model).blocks.keeps()).float().cpu()  # (layers, patches)
        vals = torch.cummin(keeps, dim=0).values.numpy()
        layer, j = (a.ravel() for a in np.indices(vals.shape))
        # Ties by position, then layer: with non-increasing scores every prefix of this order is nested.
        ranking = np.argsort(-vals, axis=1, kind="stable")  # per layer, ties by position as well
        out["tokens"] = _Candidates(vals.ravel(), layer, 1, np.lexsort((layer, j, -vals.ravel())), ranking=ranking)
    return out


def _rank_best_first(values: np.ndarray, axis: int) -> np.ndarray:
    """Rank of every value along `axis`, highest first, ties by index."""
    return np.argsort(np.argsort(-values, axis=axis, kind="stable"), axis=axis)


class _Solver:
    def __init__(self, model: nn.Module, equal_heads: bool = False, multiple_of: int = 1,
                 multiple_of_tokens: int = 1) -> None:
        model = unwrap(model)
        if not is_masked(model):
            raise VitCompressError("select needs a masked model; make one with vc.attach_masks(model, SlimConfig())")
        self.s = structure_of(model)
        self.cands = _candidates(model, self.s)
        # q/k-norm models keep whole heads, which are equal already.
        self.equal_heads = equal_heads and "attn" in self.cands and not self.s.per_head
        if "tokens" in self.cands:
            last = self.cands["tokens"].score.reshape(self.s.depth, -1)[-1]
            self.forced_token = int(np.lexsort((np.arange(last.size), -last))[0])
        self.full_macs, self.full_params = self.s.cost(*self.s.full())
        if "attn" in self.cands:
            c = self.cands["attn"]
            self.head_owner = np.concatenate([np.full(shape[0], o) for o, shape in enumerate(c.shapes)])
        self.requested = {"multiple_of": check_multiple("multiple_of", multiple_of),
                          "multiple_of_tokens": check_multiple("multiple_of_tokens", multiple_of_tokens)}
        self.multiples = self._multiples(*self.requested.values())

    def _multiples(self, k: int, k_tokens: int) -> dict[str, int]:
        """The multiple each mask type's widths are rounded to (types absent: left as thresholded), checked."""
        out = {}
        if k > 1:
            # Whole-head masks keep every head whole (0 or head_dim wide): nothing to round there.
            rounded = ("mlp",) if self.s.per_head else ("attn", "mlp")
            kinds = [kind for kind in rounded if kind in self.cands]
            what = {"attn": "dims of the narrowest attention head", "mlp": "units of the narrowest MLP"}
            check_fits("multiple_of", k, {what[kind]: int(self.cands[kind].group_width.min()) for kind in kinds})
            out.update(dict.fromkeys(kinds, k))
        if k_tokens > 1:
            if "tokens" not in self.cands:
                raise VitCompressError(f"multiple_of_tokens={k_tokens} given but the model has no token masks; "
                                       "attach them with SlimConfig(tokens=True) or leave it at 1")
            check_fits("multiple_of_tokens", k_tokens, {"tokens of the full sequence": self.s.num_prefix
                                                        + self.s.num_patches})
            out["tokens"] = k_tokens
        return out

    def taken(self, counts: dict[str, int]) -> dict[str, np.ndarray]:
        out = {}
        for kind, c in self.cands.items():
            flags = np.zeros(len(c), dtype=bool)
            flags[c.order[: counts.get(kind, len(c))]] = True
            out[kind] = flags
        if self.equal_heads:
            out["attn"] = self._equalize(out["attn"])
        if "tokens" in out:
            grid = out["tokens"].reshape(self.s.depth, -1)
            grid[:, self.forced_token] = True
        return self._align(out)

    def _align(self, taken: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Round the thresholded widths to their multiples (`vitcompress.slim.align`)."""
        for kind, k in self.multiples.items():
            c = self.cands[kind]
            if kind == "tokens":
                grid = taken[kind].reshape(self.s.depth, -1)
                taken[kind] = align_tokens(grid, c.ranking, self.s.num_prefix, k).ravel()
            else:
                taken[kind] = align_groups(taken[kind], c.group, c.rank_in_group, c.group_width, k)
        return taken

    def _equalize(self, flags: np.ndarray) -> np.ndarray:
        """Every head of an owner keeps its top w dims, w = the owner's kept dims / its heads, rounded."""
        c = self.cands["attn"]
        heads = np.array([shape[0] for shape in c.shapes])
        width = np.floor(np.bincount(c.owner[flags], minlength=len(heads)) / heads + 0.5).astype(int)
        return c.rank_in_group < width[c.owner]

    def widths(self, taken: dict[str, np.ndarray]) -> tuple[list[int], list[int], list[int]]:
        attn, hidden, tokens = self.s.full()
        owners = self.s.num_owners
        if "attn" in taken:
            c = self.cands["attn"]
            attn = (np.bincount(c.owner[taken["attn"]], minlength=owners) * c.size).tolist()
        if "mlp" in taken:
            hidden = np.bincount(self.cands["mlp"].owner[taken["mlp"]], minlength=owners).tolist()
        if "tokens" in taken:
            tokens = taken["tokens"].reshape(self.s.depth, -1).sum(1).tolist()
        return attn, hidden, tokens

    def kept_heads(self, taken: dict[str, np.ndarray]) -> list[int]:
        """Heads with any dim kept, per owner (Swin drops the others' bias-table columns)."""
        owners = self.s.num_owners
        if "attn" not in taken:
            return [self.s.heads_of(o) for o in range(owners)]
        c = self.cands["attn"]
        hit = np.bincount(c.group[taken["attn"]], minlength=len(self.head_owner)) > 0
        return np.bincount(self.head_owner[hit], minlength=owners).tolist()

    def cost(self, taken: dict[str, np.ndarray]) -> tuple[int, int]:
        return self.s.cost(*self.widths(taken), self.kept_heads(taken))

    def selection(self, taken: dict[str, np.ndarray], info: dict[str, Any]) -> Selection:
        s = self.s
        out: dict[str, Any] = {}
        if "attn" in taken and not taken["attn"].all():
            flags = self.cands["attn"].per_owner(taken["attn"])  # per owner (heads, head_dim or 1)
            if s.per_head:
                per_owner = [[list(range(s.head_dim_of(o))) if f[0] else [] for f in heads]
                             for o, heads in enumerate(flags)]
            else:
                per_owner = [[np.flatnonzero(f).tolist() for f in heads] for heads in flags]
            out["attn"] = [per_owner[o] for o in s.owner]
        if "mlp" in taken and not taken["mlp"].all():
            flags = self.cands["mlp"].per_owner(taken["mlp"])
            out["mlp"] = [np.flatnonzero(flags[o]).tolist() for o in s.owner]
        if "tokens" in taken and not taken["tokens"].all():
            out["tokens"] = [np.flatnonzero(f).tolist() for f in taken["tokens"].reshape(s.depth, -1)]
        macs, params = self.cost(taken)
        shares = {k: round(float(v.mean()), 6) for k, v in taken.items()}
        if self.equal_heads:
            info["equal_heads"] = True
        for name, k in self.requested.items():  # how it was made: reproducible from the saved selection
            if k > 1:
                info[name] = k
        info = {**info, "shares": shares, "macs": macs, "params": params,
                "macs_ratio": macs / self.full_macs, "params_ratio": params / self.full_params}
        if s.num_stages > 1:  # how the kept dims spread over the stages (Swin)
            per_stage = s.stage_shares(*self.widths(taken)[:2])
            info["stage_shares"] = {k: [round(v, 6) for v in vals] for k, vals in per_stage.items()}
        return Selection(**out, info=info)


def select(
    model: nn.Module,
    *,
    macs: float | None = None,
    params: float | None = None,
    dims: dict[str, float] | None = None,
    mode: str = "share",
    equal_heads: bool = False,
    multiple_of: int = 1,
    multiple_of_tokens: int = 1,
) -> Selection:
    """Choose what to keep from a masked model's mask values, for one budget.

    Args:
        model: A model from `attach_masks` (usually after a search).
        macs: Target MACs as a fraction of the unmasked model's, in (0, 1].
        params: Target parameters as a fraction of the unmasked model's, in (0, 1].
        dims: Share of elements each mask type keeps, e.g. {"attn": 0.7, "mlp": 0.7, "tokens": 0.9}.
        mode: For macs/params: "share" (the same share for every mask type) or "joint" (one threshold).
        equal_heads: Every head of a layer keeps the same number of dims (about the layer's thresholded total,
            each head's best), so the extracted layer runs one attention call instead of one per width: faster
            on small models, at the price of departing from the pure threshold.
        multiple_of: Round every kept head width and MLP width to a multiple of this (8 suits fp16 Tensor Cores
            and flash attention), each keeping its best units; the full width is also allowed, and a head rounded
            to 0 is removed. Budgets are met on the rounded widths; `dims` shares become approximate.
        multiple_of_tokens: Round every layer's sequence length (prefix + kept patch tokens) to a multiple of
            this, keeping at least one patch token.

    Returns:
        The `Selection`; its `info` holds the achieved MACs/params and their ratios to the original.

    Raises:
        VitCompressError: On no or several targets, a target outside (0, 1], an unknown or unmasked type, a
            target below what the masks can reach, or a multiple that is not a positive int or exceeds a width
            it rounds.
    """
    given = {k: v for k, v in (("macs", macs), ("params", params), ("dims", dims)) if v is not None}
    if len(given) != 1:
        raise VitCompressError(
            f"select needs exactly one target, got {sorted(given) or 'none'}; pass macs=0.6, params=0.6 or "
            "dims={'attn': 0.7, 'mlp': 0.7}"
        )
    if mode not in MODES:
        raise VitCompressError(f"mode={mode!r} is not one of {MODES}")
    if not isinstance(equal_heads, bool):
        raise VitCompressError(f"equal_heads={equal_heads!r} must be True or False")
    solver = _Solver(model, equal_heads, multiple_of, multiple_of_tokens)
    if dims is not None:
        return _select_dims(solver, dims)
    key, target = next(iter(given.items()))
    _check_fraction(key, target)
    return _select_budget(solver, key, float(target), mode)


def _check_fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise VitCompressError(f"{name}={value!r} must be a fraction of the original in (0, 1], e.g. {name}=0.6")


def _select_dims(solver: _Solver, dims: dict[str, float]) -> Selection:
    if not isinstance(dims, dict) or not dims:
        raise VitCompressError("dims must be a non-empty dict such as {'attn': 0.7, 'mlp': 0.7}")
    for kind, share in dims.items():
        if kind not in MASK_TYPES:
            raise VitCompressError(f"dims key {kind!r} is unknown; use {list(MASK_TYPES)}")
        if kind not in solver.cands:
            raise VitCompressError(f"dims[{kind!r}] given but the model has no {kind} masks; attach them first")
        _check_fraction(f"dims[{kind!r}]", share)
    counts = {k: _count(float(v), len(solver.cands[k])) for k, v in dims.items()}
    return solver.selection(solver.taken(counts), {"target": {"dims": dict(dims)}})


def _count(share: float, n: int) -> int:
    return int(np.floor(share * n + 0.5))


def _select_budget(solver: _Solver, key: str, target: float, mode: str) -> Selection:
    full = solver.full_macs if key == "macs" else solver.full_params
    pick = 0 if key == "macs" else 1
    if mode == "share":
        fn = lambda s: solver.taken({k: _count(s, len(c)) for k, c in solver.cands.items()})
        lo, hi = 0.0, 1.0
    else:
        total = sum(len(c) for c in solver.cands.values())
        fn = _joint(solver)
        lo, hi = 0, total
    over = lambda t: solver.cost(t)[pick] > target * full
    if over(fn(lo)):
        least = solver.cost(fn(lo))[pick] / full
        raise VitCompressError(
            f"{key}={target} is out of reach: with every maskable element removed the model still has "
            f"{least:.3f} of its {key} (embeddings, head, norms and what is not masked); pick {key} >= {least:.3f}"
        )
    if not over(fn(hi)):
        lo = hi
    elif mode == "share":
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if over(fn(mid)) else (mid, hi)
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if over(fn(mid)) else (mid, hi)
    info = {"target": {key: target}, "mode": mode, ("share" if mode == "share" else "kept_elements"): lo}
    return solver.selection(fn(lo), info)


def _joint(solver: _Solver):
    kinds = list(solver.cands)
    scores = np.concatenate([solver.cands[k].score for k in kinds])
    kind_id = np.concatenate([np.full(len(solver.cands[k]), i) for i, k in enumerate(kinds)])
    # Position of each element in its own type's order, so ties keep each type's uniform/nested ordering.
    pos = np.concatenate([np.argsort(solver.cands[k].order) for k in kinds])
    order = np.lexsort((pos, kind_id, -scores))
    offsets = np.cumsum([0] + [len(solver.cands[k]) for k in kinds])

    def taken(k: int) -> dict[str, np.ndarray]:
        picked = order[:k]
        counts = {kind: int(((picked >= offsets[i]) & (picked < offsets[i + 1])).sum()) for i, kind in enumerate(kinds)}
        return solver.taken(counts)

    return taken


def budget_curve(model: nn.Module, points: int = 21) -> list[dict[str, float]]:
    """Params and MACs of the extracted model over the whole budget range, from one search (no forward pass).

    One row per share s in 1 → 0 (every masked type keeping its top share s, as `select(mode="share")` does),
    with the analytic params/MACs and their ratios to the unmasked model.
    """
    if points < 2:
        raise VitCompressError(f"points={points} must be >= 2")
    solver = _Solver(model)
    rows = []
    for share in np.linspace(1.0, 0.0, points):
        taken = solver.taken({k: _count(float(share), len(c)) for k, c in solver.cands.items()})
        macs, params = solver.cost(taken)
        rows.append({"share": round(float(share), 6), "params": params, "macs": macs,
                     "params_ratio": params / solver.full_params, "macs_ratio": macs / solver.full_macs,
                     **{f"{k}_kept": round(float(v.mean()), 6) for k, v in taken.items()}})
    return rows
