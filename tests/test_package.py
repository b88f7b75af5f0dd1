"""The package surface: a lean import, every public name resolves, and `multiplex` leaves its input alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import vitcompress as vc


def run_python(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_import_is_lean():
    run_python(
        """
        import sys, vitcompress
        heavy = sorted(m for m in ("torch", "timm", "safetensors", "numpy") if m in sys.modules)
        assert not heavy, heavy
        assert vitcompress.__version__
        """
    )


@pytest.mark.parametrize("name", vc.__all__)
def test_every_public_name_resolves(name):
    value = getattr(vc, name)
    assert value is not None
    assert name in dir(vc)


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vc.nope  # noqa: B018


def test_multiplex_verb_works_whatever_was_imported_first():
    # The method package is `vitcompress.multiplexing`, so importing its modules never rebinds the verb.
    run_python(
        """
        import timm, vitcompress as vc
        cfg = vc.MultiplexConfig(share=1)          # imports vitcompress.multiplexing.config first
        import vitcompress.multiplexing.distill_config
        teacher = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                    embed_dim=32, depth=2, num_heads=2, num_classes=10)
        student = vc.multiplex(teacher, cfg)
        assert len(student.blocks_shared) == 2
        import vitcompress.multiplexing as mx
        assert mx.MultiplexConfig is vc.MultiplexConfig and callable(vc.multiplex)
        assert mx.multiplex(teacher, cfg).blocks_shared is not None
        """
    )


@pytest.mark.parametrize("variant", ["deit_distilled", "deit3_layerscale", "qk_norm"], indirect=True)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_multiplex_leaves_the_teacher_untouched(make_vit, variant, training):
    teacher = make_vit(variant, drop_path_rate=0.1).train(training)
    teacher.blocks[0].attn.qkv.weight.requires_grad_(False)  # a partly frozen teacher stays partly frozen
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    modules = list(teacher.named_modules())
    def flags() -> list:
        return [(m.training, {n: p.requires_grad for n, p in m.named_parameters(recurse=False)}) for _, m in modules]

    before_flags = flags()
    attrs = set(vars(teacher))

    student = vc.multiplex(teacher, vc.MultiplexConfig(share=2))
    with torch.no_grad():
        for p in student.parameters():  # the student owns its tensors: changing it never reaches the teacher
            p.add_(1.0)

    assert type(teacher).__name__ in ("VisionTransformer", "VisionTransformerDistilled")
    assert list(teacher.named_modules()) == modules  # same names, same module objects, same order
    assert flags() == before_flags
    assert set(vars(teacher)) == attrs and not hasattr(teacher, "vitcompress_spec")
    state = teacher.state_dict()
    assert state.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(state[key], value), key
    assert student.training == training and all(p.requires_grad for p in student.parameters())
