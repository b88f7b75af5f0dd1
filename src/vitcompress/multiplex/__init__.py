"""MiniViT weight multiplexing: shared blocks, weight transformations, init from the teacher, distillation."""

from __future__ import annotations

import sys
import types

from torch import nn

from vitcompress.multiplex.build import multiplex
from vitcompress.multiplex.config import MultiplexConfig

__all__ = ["MultiplexConfig", "multiplex"]


class _CallablePackage(types.ModuleType):
    """`vitcompress.multiplex` names both this package and the public verb.

    Importing any submodule (e.g. `vitcompress.multiplex.config`) makes Python bind the package to the
    attribute `vitcompress.multiplex`, replacing the function there; so the package itself is callable as the
    verb, and `vc.multiplex(model, config)` works whatever was imported first.
    """

    def __call__(self, model: nn.Module, config: MultiplexConfig | None = None) -> nn.Module:
        return multiplex(model, config)

    __call__.__doc__ = multiplex.__doc__


sys.modules[__name__].__class__ = _CallablePackage
