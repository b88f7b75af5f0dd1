"""Models saved by vitcompress 0.1 before the family-adapter refactor (commit 13acdc7) keep loading, exactly.

`saved_0_1/` holds tiny ViT and Swin models as that version wrote them (multiplexed + masked, token-masked,
extracted), and their outputs on a fixed batch; the current code must rebuild each from its spec and reproduce
the outputs. Regenerate only when the format version changes, never to make this pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

import vitcompress as vc

SAVED = Path(__file__).parent / "saved_0_1"
OUTPUTS = load_file(SAVED / "outputs.safetensors")


@pytest.mark.parametrize("name", sorted(k for k in OUTPUTS if k != "x"))
def test_a_model_saved_by_the_previous_layout_loads_and_reproduces_its_outputs(name):
    model = vc.load(SAVED / name).eval()
    with torch.no_grad():
        assert_close(model(OUTPUTS["x"]), OUTPUTS[name], rtol=1e-5, atol=1e-6)
