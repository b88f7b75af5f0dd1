"""save / load: a loaded model reproduces the saved one; a damaged directory is refused with one clear error."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.errors import VitCompressError
from vitcompress.export import io, read_spec

MUX_VARIANTS = ["vit", "deit_distilled", "deit3_layerscale", "reg4_gap_fc_norm", "avg_pool_no_cls", "swiglu",
                "glu_packed", "res_post"]


def outputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


def edit_spec(path: Path, edit) -> None:
    doc = json.loads((path / "spec.json").read_text())
    edit(doc)
    (path / "spec.json").write_text(json.dumps(doc))


def rehash(doc: dict, path: Path) -> None:
    """Make the spec's checksum match the weights on disk (a hand-edited spec that passes the checksum)."""
    doc["weights"]["sha256"] = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_plain_timm_model_round_trips(make_vit, variant, images, tmp_path):
    model = make_vit(variant)
    loaded = vc.load(vc.save(model, tmp_path / "m"))
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert_close(outputs(loaded, images), outputs(model, images))


@pytest.mark.parametrize("variant", MUX_VARIANTS, indirect=True)
def test_multiplexed_model_round_trips(make_vit, variant, perturb, images, tmp_path):
    # Perturbed, so the transforms are no longer identities and every per-layer tensor matters.
    student = perturb(vc.multiplex(make_vit(variant, depth=4), vc.MultiplexConfig(share=2))).train()
    path = vc.save(student, tmp_path / "m")
    assert student.training, "save must not change the model's mode"
    loaded = vc.load(path)
    assert not loaded.training
    assert vc.count_params(loaded) == vc.count_params(student)
    assert loaded.blocks[0]._shared is loaded.blocks[1]._shared is loaded.blocks_shared[0]
    assert loaded.vitcompress_spec == student.vitcompress_spec
    assert_close(outputs(loaded, images), outputs(student, images))
    # One copy of each shared tensor on disk too.
    assert load_file(path / "model.safetensors").keys() == student.state_dict().keys()
    with pytest.raises(VitCompressError, match="already multiplexed"):
        vc.multiplex(loaded, vc.MultiplexConfig())


@pytest.mark.parametrize(
    "cfg",
    [
        dict(groups=[[0, 3], [1], [2, 4]], init="average"),
        dict(share=2, kernel_size=3, attn_transform=False),
        dict(share=5, mlp_transform=False),
        dict(share=1, attn_transform=False, mlp_transform=False),
    ],
    ids=["explicit_groups", "k3_no_attn_tf", "one_block_no_mlp_tf", "share1_plain"],
)
def test_every_multiplex_config_is_rebuilt(make_vit, perturb, cfg, images, tmp_path):
    student = perturb(vc.multiplex(make_vit(depth=5, drop_path_rate=0.1), vc.MultiplexConfig(**cfg)))
    loaded = vc.load(vc.save(student, tmp_path / "m"))
    assert_close(outputs(loaded, images), outputs(student, images))
    assert [blk.group for blk in loaded.blocks] == [blk.group for blk in student.blocks]
    rates = [getattr(blk.drop_path1, "drop_prob", 0.0) for blk in student.blocks]
    assert [getattr(blk.drop_path1, "drop_prob", 0.0) for blk in loaded.blocks] == rates and rates[-1] > 0


def test_saved_directory_holds_two_ordinary_files(make_vit, tmp_path):
    path = vc.save(make_vit(), tmp_path / "m", extra={"mean": [0.5, 0.5, 0.5], "note": "tiny"})
    assert sorted(os.listdir(path)) == ["model.safetensors", "spec.json"]
    mask = os.umask(0)
    os.umask(mask)
    for name in os.listdir(path):  # not mkstemp's owner-only 0600
        assert (path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    doc = read_spec(path)
    assert doc["extra"] == {"mean": [0.5, 0.5, 0.5], "note": "tiny"}
    assert doc["format_version"] == io.FORMAT_VERSION


def test_load_uses_no_pickle(make_vit, tmp_path, monkeypatch, images):
    model = make_vit("deit_distilled")
    path = vc.save(model, tmp_path / "m")

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling during load")

    for target, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(target, name, refuse)
    assert_close(outputs(vc.load(path), images), outputs(model, images))


# --- damaged or foreign directories -------------------------------------------------------------------------


@pytest.fixture
def saved(make_vit, tmp_path) -> Path:
    student = vc.multiplex(make_vit(), vc.MultiplexConfig(share=2))
    return vc.save(student, tmp_path / "saved")


def truncate(path: Path) -> None:
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def flip_byte(path: Path) -> None:
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-7] ^= 0xFF
    weights.write_bytes(bytes(data))


def truncate_and_rehash(path: Path) -> None:
    truncate(path)
    edit_spec(path, lambda doc: rehash(doc, path))


DAMAGE = {
    "truncated_weights": (truncate, "checksum mismatch"),
    "flipped_byte": (flip_byte, "checksum mismatch"),
    "truncated_with_matching_checksum": (truncate_and_rehash, "model.safetensors cannot be read"),
    "missing_weights": (lambda p: (p / "model.safetensors").unlink(), "model.safetensors is missing"),
    "missing_spec": (lambda p: (p / "spec.json").unlink(), "has no spec.json"),
    "garbage_spec": (lambda p: (p / "spec.json").write_text("{not json"), r"spec.json is corrupt \(JSONDecodeError"),
    "binary_spec": (lambda p: (p / "spec.json").write_bytes(b"\xff\xfe\x00"), "spec.json is corrupt"),
    "not_a_spec": (lambda p: (p / "spec.json").write_text("[1, 2]"), "is not a vitcompress spec"),
    "newer_format": (
        lambda p: edit_spec(p, lambda d: d.update(format_version=io.FORMAT_VERSION + 1)),
        "newer than this vitcompress reads",
    ),
    "format_version_str": (
        lambda p: edit_spec(p, lambda d: d.update(format_version="1")), "no valid format_version"
    ),
    "no_weights_entry": (lambda p: edit_spec(p, lambda d: d.pop("weights")), "no valid 'weights' entry"),
    "weights_outside_dir": (
        lambda p: edit_spec(p, lambda d: d["weights"].update(file="../saved/model.safetensors")),
        "no valid 'weights' entry",
    ),
    "unknown_step": (
        lambda p: edit_spec(p, lambda d: d["spec"]["steps"][0].update(kind="prune")), "unknown kind 'prune'"
    ),
    "unknown_family": (
        lambda p: edit_spec(p, lambda d: d["spec"]["base"].update(family="cnn")), "unknown model family 'cnn'"
    ),
    "spec_without_kwargs": (
        lambda p: edit_spec(p, lambda d: d["spec"]["base"].pop("kwargs")), "does not describe a model"
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_directory_is_refused(saved, damage):
    corrupt, message = DAMAGE[damage]
    corrupt(saved)
    with pytest.raises(VitCompressError, match=message):
        vc.load(saved)


def test_missing_directory(tmp_path):
    with pytest.raises(VitCompressError, match="does not exist"):
        vc.load(tmp_path / "nowhere")


@pytest.mark.parametrize("rehashed", [False, True], ids=["copied", "copied_and_rehashed"])
@pytest.mark.parametrize(
    ("other", "message"),
    [("teacher", r"missing \['blocks\.0\.attn\.qkv\.weight'"), ("wider", r"shape \['cls_token")],
    ids=["plain_teacher", "wider_student"],
)
def test_spec_of_another_model_is_refused(make_vit, saved, tmp_path, rehashed, other, message):
    source = make_vit() if other == "teacher" else vc.multiplex(make_vit(embed_dim=64), vc.MultiplexConfig(share=2))
    foreign = vc.save(source, tmp_path / "other")
    shutil.copy(foreign / "spec.json", saved / "spec.json")
    if rehashed:  # get past the checksum: the weights must still be checked against the architecture
        edit_spec(saved, lambda doc: rehash(doc, saved))
    with pytest.raises(VitCompressError, match=message if rehashed else "checksum mismatch"):
        vc.load(saved)


def test_save_to_a_file_path(make_vit, tmp_path):
    target = tmp_path / "model.bin"
    target.write_text("keep me")
    with pytest.raises(VitCompressError, match="is a file; pass a directory"):
        vc.save(make_vit(), target)
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        (lambda mk: nn.Linear(4, 4), None, "Linear is not a supported model"),
        (lambda mk: mk(), {"bad": object()}, "extra metadata is not JSON-serialisable"),
    ],
    ids=["unsupported_model", "bad_extra"],
)
def test_refused_save_writes_nothing(make_vit, tmp_path, model, extra, message):
    with pytest.raises(VitCompressError, match=message):
        vc.save(model(make_vit), tmp_path / "m", extra=extra)
    assert not (tmp_path / "m").exists()


def test_interrupted_weights_write_leaves_the_previous_save_intact(make_vit, perturb, saved, monkeypatch, images):
    before = outputs(vc.load(saved), images)
    files = sorted(os.listdir(saved))

    def half_write(state, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(io, "save_file", half_write)
    other = perturb(vc.multiplex(make_vit(), vc.MultiplexConfig(share=2)))
    with pytest.raises(OSError, match="disk full"):
        vc.save(other, saved)
    assert sorted(os.listdir(saved)) == files, "no temporary file may be left behind"
    assert_close(outputs(vc.load(saved), images), before)


def test_interrupted_spec_write_is_detected_not_loaded(make_vit, perturb, saved, monkeypatch):
    # New weights next to the old spec: same architecture, so only the checksum stands between this and a
    # silently wrong model.
    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    other = perturb(vc.multiplex(make_vit(), vc.MultiplexConfig(share=2)))
    monkeypatch.setattr(Path, "write_text", fail)
    with pytest.raises(OSError, match="disk full"):
        vc.save(other, saved)
    monkeypatch.undo()
    assert sorted(os.listdir(saved)) == ["model.safetensors", "spec.json"]
    with pytest.raises(VitCompressError, match="checksum mismatch"):
        vc.load(saved)
