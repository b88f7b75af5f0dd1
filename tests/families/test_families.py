"""Every family adapter through both methods, on the one table of tiny configs (table.py): adding a family is one
row there. The method suites that run on the same table: test_multiplexing.py, test_distillation.py,
test_slimming.py; what is specific to one family stays in that family's own suite.
"""

from __future__ import annotations

import pytest
import timm
import torch

import vitcompress as vc
from vitcompress.models import family_of

from .table import FAMILIES, TINY, build, images


@pytest.fixture(params=list(FAMILIES))
def name(request) -> str:
    return request.param


def test_each_model_is_read_by_its_family_and_rebuilt_from_its_description(name):
    from vitcompress.models.spec import build_from_spec, get_spec

    model = build(name)
    del model.vitcompress_spec  # read again, as off any plain timm model
    assert family_of(model).name == FAMILIES[name][0]
    rebuilt = build_from_spec(get_spec(model))
    assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == [
        (k, v.shape) for k, v in model.state_dict().items()]


def test_relation_distillation_from_eva_into_a_vit():
    teacher = build("eva02_tiny_patch14_224.mim_in22k")
    student = timm.create_model("vit_tiny_patch16_224", img_size=56, patch_size=14, **TINY)
    objective = vc.DistillationObjective(student, teacher, vc.DistillConfig(attn_layers="all", hidden_layers="all"))
    loss, parts = objective(student, images(teacher), torch.tensor([0, 1]))
    objective.close()
    assert torch.isfinite(loss) and parts["kd_attn"] > 0


def test_what_eva_does_not_support_is_one_line():
    model = build("vit_small_patch16_dinov3")
    with pytest.raises(vc.VitCompressError, match="token masks are not supported on Eva"):
        vc.attach_masks(model, vc.SlimConfig(tokens=True))
    gqa = timm.create_model("vit_base_patch16_rope_224", pretrained=False, img_size=64, num_kv_heads=2,
                            qkv_fused=False, **TINY)
    with pytest.raises(vc.VitCompressError, match="block 0 uses grouped-query attention"):
        vc.multiplex(gqa)
