"""Tiny timm ViT variants shared by the multiplex and export tests (`make_vit`, `variant`), and one torch thread.

Each variant exercises one token layout or block option of timm's VisionTransformer family; all of them are built
tiny (32×32 images, 8×8 patches → a 4×4 grid) so a forward pass costs milliseconds. The table itself is
tests/families/table.py, with a row per model family.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from families.table import VIT_VARIANTS, build_vit, perturb_
from torch import nn

# The ViT variants live in the one table of tiny models (tests/families/table.py) with the other families' rows.
VARIANTS = VIT_VARIANTS


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The models are tiny: on a shared 2-core machine extra intra-op threads spin and wait instead of helping
    # (one thread is ~10x faster here when other processes run). Tests that time threads set their own.
    # Session scope: it must hold before any module-scoped fixture trains a model, or a run compared with that
    # one would use another thread count (and another float summation order).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    """Every tiny variant; narrow it with `@pytest.mark.parametrize("variant", [...], indirect=True)`."""
    return request.param


@pytest.fixture
def make_vit() -> Callable[..., nn.Module]:
    return build_vit


@pytest.fixture
def perturb() -> Callable[..., nn.Module]:
    return perturb_


@pytest.fixture
def images() -> torch.Tensor:
    """Two seeded 32×32 images."""
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
