"""Family adapters: what vitcompress needs to know about one timm model family, registered by name.

Each timm family is one adapter file (`models/vit.py`, `models/swin.py`), as each family is one file in timm.
The adapter answers every family-specific question — is this model ours and supported, how to describe and
rebuild it, its blocks in execution order and its stages — and hands each surgery the family's implementation
(its multiplexed blocks, its masked and pruned attention, its cost structure). `multiplex`, `attach_masks`,
`select`, `extract`, the cost model and the distillation recorders ask `family_of(model)` and never name a
family; a new family is a new adapter calling `register_family`.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vitcompress.errors import VitCompressError

if TYPE_CHECKING:  # only for annotations: the method packages import this module, not the other way round
    from vitcompress.multiplexing.config import MultiplexConfig
    from vitcompress.slim.config import SlimConfig
    from vitcompress.slim.selection import Selection

_FAMILIES: dict[str, Family] = {}


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module behind DDP (`.module`) or torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


class Family(abc.ABC):
    """One timm model family. Subclasses set `name` and `supported` and implement every abstract method below."""

    name: str = ""
    supported: str = ""
    """What the family covers, in words, for the one-line refusal of a model no family matches."""

    # -- the model itself ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def matches(self, model: nn.Module) -> bool:
        """Whether `model` (unwrapped) belongs to this family, supported or not."""

    @abc.abstractmethod
    def check(self, model: nn.Module) -> None:
        """Raise a one-line VitCompressError naming the first part of `model` this family cannot handle."""

    @abc.abstractmethod
    def describe(self, model: nn.Module) -> dict[str, Any]:
        """The JSON-able base description `build` rebuilds the architecture from."""

    @abc.abstractmethod
    def build(self, desc: dict[str, Any], init: bool = True) -> nn.Module:
        """A model with the architecture `desc` describes (`init=False`: weights left as allocated)."""

    @abc.abstractmethod
    def blocks(self, model: nn.Module) -> list[nn.Module]:
        """Transformer blocks in execution order, over all stages."""

    @abc.abstractmethod
    def stage_depths(self, model: nn.Module) -> list[int]:
        """Blocks per stage (one stage for an isotropic ViT); sharing groups never cross a stage."""

    def num_prefix_tokens(self, model: nn.Module) -> int:
        """Class/distillation/register tokens in front of the patch tokens."""
        return 0

    # -- MiniViT -----------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def multiplex(self, model: nn.Module, config: MultiplexConfig) -> tuple[nn.Module, list[list[int]]]:
        """The multiplexed student of a supported plain model, and its sharing groups (global layer indices)."""

    # -- ViT-Slim ----------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def check_masks(self, model: nn.Module, config: SlimConfig) -> None:
        """Raise a one-line VitCompressError if `model` (plain or multiplexed) cannot take these masks."""

    @abc.abstractmethod
    def attach_masks(self, model: nn.Module, config: SlimConfig) -> nn.Module:
        """Put masks on `model` in place (it is a copy already) and return it."""

    @abc.abstractmethod
    def is_masked(self, model: nn.Module) -> bool:
        """Whether the model carries ViT-Slim masks."""

    @abc.abstractmethod
    def mask_tensors(self, model: nn.Module) -> dict[str, list[torch.Tensor]]:
        """Mask parameters by kind: "attn"/"mlp" per owner (layer or shared group), "tokens" per layer."""

    @abc.abstractmethod
    def structure(self, model: nn.Module) -> Any:
        """The analytic cost structure (`slim.cost`) of a plain, multiplexed or masked model."""

    @abc.abstractmethod
    def apply_selection(self, model: nn.Module, selection: Selection) -> None:
        """Slice an unmasked (plain or multiplexed) model in place to what `selection` keeps."""


class IsotropicFamily(Family):
    """A family whose blocks are one sequence, `model.blocks`, behind class/register tokens (ViT, Eva)."""

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        return list(model.blocks)

    def stage_depths(self, model: nn.Module) -> list[int]:
        return [len(model.blocks)]

    def num_prefix_tokens(self, model: nn.Module) -> int:
        return int(model.num_prefix_tokens)


def register_family(family: Family) -> Family:
    """Make `family` known to every surgery and to spec rebuilding; returns it (usable on the adapter's instance)."""
    if not family.name:
        raise ValueError(f"{type(family).__name__} has no name")
    _FAMILIES[family.name] = family
    return family


def families() -> list[Family]:
    return list(_FAMILIES.values())


def family_named(name: str) -> Family:
    family = _FAMILIES.get(name)
    if family is None:
        raise VitCompressError(f"unknown model family {name!r}; known: {sorted(_FAMILIES)}")
    return family


def find_family(model: nn.Module) -> Family | None:
    model = unwrap(model)
    return next((f for f in _FAMILIES.values() if f.matches(model)), None)


def family_of(model: nn.Module) -> Family:
    """The family of `model`, which must be supported: else one line naming the model and what is supported."""
    family = find_family(model)
    if family is None:
        covered = "; ".join(f.supported for f in _FAMILIES.values())
        name = type(unwrap(model)).__name__
        raise VitCompressError(f"{name} is not a supported model; vitcompress works on {covered}")
    return family
