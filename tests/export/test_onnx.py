"""ONNX export of every model kind, checked in onnxruntime at another batch size; refusals leave no file.

The models are the shared tiny tables (`tests/conftest.py` ViT variants, `tests/families` family rows), slimmed with
seeded random mask values at 60% MACs, so heads keep different numbers of dims and token masks gather tokens.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable

import pytest
import torch
from families.test_families import FAMILIES, build
from slim.conftest import randomize_masks
from torch import nn
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.errors import VitCompressError
from vitcompress.export._ort import ort_session, recorded_counts
from vitcompress.models.attention import AttentionCore
from vitcompress.slim.pruned import GatheredBlock

pytest.importorskip("onnxruntime")

SWIN, SWIN_V2 = "swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256"
EVA02, DINOV3 = "eva02_tiny_patch14_224.mim_in22k", "vit_small_patch16_dinov3"
TORCHSCRIPT_REFUSED = {"vit_base_patch16_rope_mixed_224"}
"""Family rows whose plain timm model the TorchScript exporter gets wrong (a batch-dependent Expand in timm's
mixed-RoPE table): the check refuses them; the dynamo exporter handles them."""


def slimmed(model: nn.Module, tokens: bool = False, equal_heads: bool = False) -> nn.Module:
    masked = vc.attach_masks(model, vc.SlimConfig(attn=True, mlp=True, tokens=tokens))
    randomize_masks(masked)
    return vc.extract(masked, vc.select(masked, macs=0.6, equal_heads=equal_heads)).eval()


def multiplexed(model: nn.Module) -> nn.Module:
    return vc.multiplex(model, vc.MultiplexConfig(share=2)).eval()


def kinds(make_vit: Callable[..., nn.Module], perturb: Callable[..., nn.Module]) -> dict[str, Callable[[], nn.Module]]:
    """Every kind of model a user exports, by name (built on demand: each test builds the one it needs)."""
    return {
        "plain": lambda: perturb(make_vit()),
        "multiplexed": lambda: multiplexed(perturb(make_vit())),
        "slim_ragged_heads": lambda: slimmed(perturb(make_vit())),
        "slim_equal_heads": lambda: slimmed(perturb(make_vit()), equal_heads=True),
        "slim_gathered_tokens": lambda: slimmed(perturb(make_vit("reg_tokens")), tokens=True),
        # token masks need the full grid of the multiplexed depth-wise conv, so attn/MLP masks only
        "multiplexed_slim": lambda: slimmed(multiplexed(perturb(make_vit(depth=4)))),
        "swin": lambda: build(SWIN),
        "swin_v2": lambda: build(SWIN_V2),
        "eva02": lambda: build(EVA02),
        "dinov3": lambda: build(DINOV3),
        "swin_slim": lambda: slimmed(build(SWIN)),
        "swin_v2_slim": lambda: slimmed(build(SWIN_V2)),
        "eva02_slim": lambda: slimmed(build(EVA02)),
        "swin_multiplexed_slim": lambda: slimmed(multiplexed(build(SWIN))),
    }


KINDS = list(kinds(None, None))  # type: ignore[arg-type]
SLOW_KINDS = {"swin_multiplexed_slim"}  # 2-4x the others to build and export; its parts are each covered fast


_BUILT: dict[str, nn.Module] = {}


@pytest.fixture
def make(make_vit, perturb) -> Callable[[str], nn.Module]:
    """A fresh copy of a kind's model; each is built (and slimmed) once per session."""
    table = kinds(make_vit, perturb)

    def get(kind: str) -> nn.Module:
        if kind not in _BUILT:
            _BUILT[kind] = table[kind]()
        return copy.deepcopy(_BUILT[kind])

    return get


def images_for(model: nn.Module, batch: int, seed: int = 5) -> torch.Tensor:
    return torch.randn(batch, 3, *model.patch_embed.img_size, generator=torch.Generator().manual_seed(seed))


def run_onnx(path, images: torch.Tensor) -> torch.Tensor:
    session = ort_session(path)
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])


def test_the_slimmed_kinds_are_what_their_names_say(make):
    """The parity tests below are only as strong as the models: ragged heads, equal heads and gathered tokens."""
    def widths(model):
        return [m.head_dims for m in model.modules() if isinstance(m, AttentionCore)]

    assert any(len(set(w)) > 1 for w in widths(make("slim_ragged_heads")))
    assert all(len({d for d in w if d}) <= 1 for w in widths(make("slim_equal_heads")))
    gathered = make("slim_gathered_tokens")
    assert any(isinstance(b, GatheredBlock) and b.gather.numel() < gathered.patch_embed.num_patches + 5
               for b in gathered.blocks)


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_KINDS else k for k in KINDS])
def test_export_matches_torch_at_another_batch_size(make, kind, tmp_path):
    model = make(kind)
    path = tmp_path / "model.onnx"
    result = vc.export_onnx(model, path, batch_size=1, check_batch_size=3)
    assert result == vc.OnnxExport(path, "torchscript", 17, "float32", result.max_abs_err, 3)
    assert result.max_abs_err <= 1e-4
    images = images_for(model, batch=4)  # a third batch size, checked here independently of export_onnx
    with torch.no_grad():
        assert_close(run_onnx(path, images), model(images), rtol=0, atol=1e-4)
    assert os.listdir(tmp_path) == ["model.onnx"]  # no temporary file left behind


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(FAMILIES) - TORCHSCRIPT_REFUSED))
def test_every_family_row_exports(name, tmp_path):
    for model in (build(name), slimmed(build(name))):
        assert vc.export_onnx(model, tmp_path / "m.onnx").max_abs_err <= 1e-4


@pytest.mark.parametrize("name", sorted(TORCHSCRIPT_REFUSED & set(FAMILIES)))
def test_a_graph_that_bakes_the_traced_batch_is_refused(name, tmp_path):
    with pytest.raises(VitCompressError, match=r"^onnxruntime cannot run the exported graph at batch 3 .*no file"):
        vc.export_onnx(build(name), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kind", ["slim_ragged_heads", "eva02_slim"])
def test_float16_runs_in_onnxruntime_cpu(make, kind, tmp_path):
    model = make(kind)
    result = vc.export_onnx(model, tmp_path / "half.onnx", dtype="float16")
    assert result.dtype == "float16" and result.max_abs_err <= 1e-2
    images = images_for(model, batch=2)
    out = run_onnx(result.path, images.half())
    assert out.dtype == torch.float16
    with torch.no_grad():  # against the float32 model: the export rounds, it does not change the function
        assert_close(out.float(), model(images), rtol=0, atol=5e-3)
    assert next(model.parameters()).dtype == torch.float32  # the float16 graph came from a copy


def test_export_leaves_the_model_as_it_was(make, tmp_path):
    model = make("slim_gathered_tokens").train()  # its gathered blocks keep their own training flags
    model.blocks[0].eval()  # a deliberately frozen part keeps its own flag
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    vc.export_onnx(model, tmp_path / "m.onnx")
    assert [m.training for m in model.modules()] == flags
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_opset_choice_is_written(make, tmp_path):
    import onnx

    result = vc.export_onnx(make("eva02_slim"), tmp_path / "m.onnx", opset=14)
    assert result.opset == 14
    assert {o.domain: o.version for o in onnx.load(str(result.path)).opset_import}[""] == 14


def test_params_and_macs_are_recorded_for_profile(make, tmp_path):
    model = make("multiplexed_slim")
    path = vc.export_onnx(model, tmp_path / "m.onnx").path
    assert recorded_counts(path) == (vc.count_params(model), vc.count_macs(model, (3, 32, 32)))


# --- refusals: one line, nothing written ------------------------------------------------------------------------


class _BatchBaked(nn.Module):
    """A model that reads its batch size as a Python int: the tracer records the traced value as a constant."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.patch_embed = model, model.patch_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * int(x.shape[0])


def test_a_wrong_graph_is_refused_and_no_file_is_left(make_vit, tmp_path):
    path = tmp_path / "new" / "dir" / "m.onnx"  # the directories it made go too
    with pytest.raises(VitCompressError) as error:
        vc.export_onnx(_BatchBaked(make_vit()), path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("onnxruntime differs from torch by ") and "(> atol 0.0001) at batch 3" in message
    assert os.listdir(tmp_path) == []


def test_a_broken_exporter_is_refused_and_an_older_file_is_kept(make_vit, monkeypatch, tmp_path):
    """An op that exports wrong values (here: the exporter is handed a perturbed copy) fails the check."""
    model = make_vit()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the user's earlier export")
    real = torch.onnx.export

    def wrong_export(module, args, f, **kwargs):
        broken = copy.deepcopy(module)
        with torch.no_grad():
            broken.model.head.bias.add_(1e-3)
        return real(broken, args, f, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", wrong_export)
    with pytest.raises(VitCompressError, match=r"^onnxruntime differs from torch by 0\.00\d+ \(> atol 0\.0001\)"):
        vc.export_onnx(model, path)
    assert path.read_bytes() == b"the user's earlier export"
    assert os.listdir(tmp_path) == ["m.onnx"]
    monkeypatch.setattr(torch.onnx, "export", real)
    with pytest.raises(VitCompressError, match=r"\(> atol 1e-09\)"):  # the user's atol, below float32 round-off
        vc.export_onnx(model, path, atol=1e-9)
    assert path.read_bytes() == b"the user's earlier export"


def test_an_exporter_failure_is_one_line(make_vit, monkeypatch, tmp_path):
    def fail(*args, **kwargs):
        raise RuntimeError("Failed to decompose the FX graph.\n" + "context\n" * 50)

    monkeypatch.setattr(torch.onnx, "export", fail)
    for dynamo, fix in ((False, "report it"), (True, "dynamo=False")):
        with pytest.raises(VitCompressError) as error:
            vc.export_onnx(make_vit(), tmp_path / "m.onnx", dynamo=dynamo, opset=18 if dynamo else None)
        message = str(error.value)
        assert "\n" not in message and "RuntimeError: Failed to decompose the FX graph." in message and fix in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("module", ["onnxruntime", "onnx"])
def test_missing_extra_names_the_install_command(make_vit, monkeypatch, tmp_path, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(VitCompressError, match=rf"need {module}, .* pip install -e \"\.\[export\]\""):
        vc.export_onnx(make_vit(), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_dynamo_without_onnxscript_names_the_install_command(make_vit, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(VitCompressError, match=r"need onnxscript, .*\[export\]"):
        vc.export_onnx(make_vit(), tmp_path / "m.onnx", dynamo=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"check_batch_size": 1}, r"check_batch_size must differ from batch_size \(1\)"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"dtype": "bfloat16"}, "dtype 'bfloat16' is not one of float32, float16"),
        ({"opset": 13}, r"opset 13 is not one the TorchScript exporter writes \(14-20\)"),
        ({"opset": 17, "dynamo": True}, r"opset 17 is not one the dynamo exporter writes \(18-23\)"),
        ({"batch_size": 1, "dynamo": True}, "pass batch_size >= 2"),
        ({"atol": 0}, "atol must be a positive number"),
        ({"input_size": (3, 64, 64)}, r"does not match the model's \(3, 32, 32\)"),
    ],
)
def test_bad_arguments_are_one_line(make_vit, tmp_path, kwargs, message):
    with pytest.raises(VitCompressError, match=message):
        vc.export_onnx(make_vit(), tmp_path / "m.onnx", **kwargs)
    assert os.listdir(tmp_path) == []


def test_bad_paths(make_vit, tmp_path):
    with pytest.raises(VitCompressError, match=r"must end in \.onnx; pass e\.g\. .*m\.onnx"):
        vc.export_onnx(make_vit(), tmp_path / "m.pt")
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(VitCompressError, match="is a directory"):
        vc.export_onnx(make_vit(), tmp_path / "d.onnx")
    with pytest.raises(VitCompressError, match="takes a torch nn.Module, got str"):
        vc.export_onnx("vit_tiny_patch16_224", tmp_path / "m.onnx")


def test_export_writes_into_a_new_directory(make_vit, tmp_path):
    path = tmp_path / "a" / "b" / "m.onnx"
    assert vc.export_onnx(make_vit(), path).path == path and path.is_file()
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal file's mode, not mkstemp's private 0o600


# --- the dynamo exporter (slow: torch.export takes 15-300 s a model on 2 busy cores) ------------------------------
# Every kind above exports with it at batch 2 (measured once for all of them, README "Deploy"); the suite keeps the
# cheapest kind and the one it was reported to fail on (a slimmed Swin: it failed in train mode, not in eval mode).


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["slim_gathered_tokens", "swin_slim"])
def test_dynamo_exporter(make, kind, tmp_path):
    model = make(kind)
    result = vc.export_onnx(model, tmp_path / "m.onnx", dynamo=True)
    assert (result.exporter, result.opset) == ("dynamo", 18) and result.max_abs_err <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TORCHSCRIPT_REFUSED & set(FAMILIES)))
def test_dynamo_exports_what_torchscript_refuses(name, tmp_path):
    assert vc.export_onnx(build(name), tmp_path / "m.onnx", dynamo=True).max_abs_err <= 1e-4


# --- exported and extracted models keep their timm API -----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_timm_api_after_compression(make, kind):
    """(`test_export_leaves_the_model_as_it_was` covers the API after an export: the module is unchanged.)"""
    model = make(kind)
    x = images_for(model, batch=2)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        assert_close(model.forward_head(features), logits)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (2, model.num_features)
        model.reset_classifier(7)
        assert model(x).shape == (2, 7) and model.num_classes == 7
        assert_close(model.forward_head(features, pre_logits=True), pre_logits)  # only the head changed
        model.reset_classifier(0)
        assert_close(model(x), pre_logits)


def test_a_reset_head_exports(make, tmp_path):
    model = make("slim_gathered_tokens")
    model.reset_classifier(4)
    result = vc.export_onnx(model, tmp_path / "m.onnx")
    assert result.max_abs_err <= 1e-4 and run_onnx(result.path, images_for(model, 2)).shape == (2, 4)


@pytest.mark.parametrize("kind", ["plain", "multiplexed", "slim_ragged_heads", "multiplexed_slim", "swin_slim",
                                  "eva02_slim"])
def test_forward_intermediates_of_dense_kinds(make, kind):
    model = make(kind)
    x = images_for(model, batch=2)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        assert_close(final, model.forward_features(x))
    assert len(intermediates) == len(getattr(model, "blocks", None) or model.layers)
