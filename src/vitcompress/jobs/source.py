"""`ModelSource`: what a user names a model by on the command line, as one config every job takes."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from vitcompress.config import BaseConfig
from vitcompress.errors import VitCompressError


@dataclasses.dataclass
class ModelSource(BaseConfig):
    """A model given by timm name, saved directory or checkpoint file, and how to build it."""

    model: str
    """timm model name, a directory written by vitcompress.save (or a job's -o), or a checkpoint file (with
    arch)."""
    arch: str | None = None
    """timm architecture of a checkpoint file given as the model."""
    pretrained: bool = False
    """Load timm's pretrained weights for a model given by name (needs hub access)."""
    model_args: dict[str, Any] | None = None
    """Extra timm.create_model arguments for a name or checkpoint, e.g. img_size=32 patch_size=4 depth=12."""

    def validate(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise VitCompressError(f"model={self.model!r} must name a model: a timm name, saved dir or checkpoint")
        if self.model_args is not None and not isinstance(self.model_args, dict):
            raise VitCompressError(f"model_args={self.model_args!r} must be a mapping, e.g. {{depth: 12}}")

    def resolve(self) -> tuple[nn.Module, dict[str, Any]]:
        """The model and the metadata saved with it (empty unless it is a vitcompress directory)."""
        from vitcompress.export.resolve import resolve_model

        return resolve_model(self.model, arch=self.arch, pretrained=self.pretrained, model_args=self.model_args)


def teacher_flags(name: str):
    """`Flags` that give a second model of a job its own options: --<name>, --<name>-arch, --<name>-pretrained,
    --<name>-args; it is None unless --<name> is given."""
    from vitcompress.cli_args import Flags

    return Flags(rename={"model": name, "arch": f"{name}_arch", "pretrained": f"{name}_pretrained",
                         "model_args": f"{name}_args"}, optional=True)


def source_of(ref: str | ModelSource | None) -> ModelSource | None:
    """A plain string given to a job is a model reference with default build options."""
    return ModelSource(ref) if isinstance(ref, str) else ref
