"""Every user mistake ends in one `VitCompressError` that names the problem and the fix."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from vitcompress.data import AugmentConfig, DataConfig, build_loaders
from vitcompress.errors import VitCompressError


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("s3:bucket/images", r"unknown data spec scheme 's3:'.*use digits, folder:<path>, hfds:<path>"),
        ("", "data spec must be a non-empty string"),
        (
            "/no/such/dataset",
            r"dataset path /no/such/dataset does not exist; pass an ImageFolder root.*--data digits",
        ),
        ("folder:/no/such/dataset", "dataset path /no/such/dataset does not exist"),
        ("hfds:/no/such/dataset", "does not exist; pass a directory written by datasets' save_to_disk"),
    ],
)
def test_bad_spec(spec: str, match: str) -> None:
    with pytest.raises(VitCompressError, match=match):
        build_loaders(spec, input_size=(3, 16, 16))


@pytest.mark.parametrize(
    "input_size", [(3, 32), (2, 32, 32), (3, 0, 32), (3, 32.5, 32), "abc", None, (3, 16, 16, 1)]
)
def test_bad_input_size(input_size: object) -> None:
    with pytest.raises(VitCompressError, match=r"input_size must be \(C, H, W\) with C in \{1, 3\}"):
        build_loaders("digits", input_size=input_size)  # type: ignore[arg-type]


def test_input_size_is_checked_before_the_path() -> None:
    with pytest.raises(VitCompressError, match="input_size"):
        build_loaders("/no/such/dataset", input_size=(5, 16, 16))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"num_workers": -1}, "num_workers must be >= 0"),
        ({"mean": (0.1, 0.2)}, r"mean has 2 values but input_size has 3 channel\(s\)"),
        ({"std": (0.5, 0.0, 0.5)}, "std values must be > 0"),
    ],
)
def test_bad_loader_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(VitCompressError, match=match):
        build_loaders("digits", input_size=(3, 16, 16), **kwargs)


def test_distributed_without_process_group() -> None:
    with pytest.raises(VitCompressError, match="distributed=True needs an initialised torch.distributed"):
        build_loaders("digits", input_size=(1, 8, 8), distributed=True)


@pytest.mark.parametrize(
    ("splits", "match"),
    [
        ({"val": ["a"]}, r"has no train/ subfolder"),
        ({"train": ["a"]}, r"has no val/ subfolder.*val/ may be named validation/"),
        ({"train": [], "val": ["a"]}, r"train has no class subfolders; put images in"),
        ({"train": ["a", "b"], "val": ["a", "zebra"]}, r"class folder\(s\) \['zebra'\] that .*train lacks"),
    ],
)
def test_bad_image_folder_layout(make_image_folder: Callable[..., Path], splits: dict, match: str) -> None:
    root = make_image_folder(splits)
    for split in splits:  # a split listed with no classes still exists, as an empty folder
        (root / split).mkdir(exist_ok=True)
    with pytest.raises(VitCompressError, match=match):
        build_loaders(str(root), input_size=(3, 16, 16))


def test_empty_class_folder(make_image_folder: Callable[..., Path]) -> None:
    root = make_image_folder({"train": ["a", "b"], "val": ["a", "b"]})
    (root / "train" / "empty").mkdir()
    (root / "train" / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(VitCompressError, match=r"class folder\(s\) \['empty'\] in .*train hold no images"):
        build_loaders(str(root), input_size=(3, 16, 16))


def test_file_instead_of_folder(tmp_path: Path) -> None:
    path = tmp_path / "images.zip"
    path.write_bytes(b"")
    with pytest.raises(VitCompressError, match="is not a directory; pass an ImageFolder root"):
        build_loaders(f"folder:{path}", input_size=(3, 16, 16))


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        ("randaugment", "unknown policy 'randaugment'"),
        ("rand-m9-msd0.5", "unknown section 'msd'"),
        ("rand-m9-foo", "section 'foo' is not <key><number>"),  # timm would skip it silently
        ("rand-tbogus", "unknown transform set 'tbogus'"),  # timm would use its default set silently
        ("rand-m9.5", "section 'm9.5' has a malformed value"),
        ("augmix-m5-x2", "unknown section 'x'"),
        ("original-m3", "unknown section 'm'"),
        ("rand-m9-", "section '' is not"),
    ],
)
def test_unknown_augmentation_policy(policy: str, reason: str) -> None:
    forms = r"use rand-m<magnitude>.*augmix-m<severity>.*original, originalr, v0, v0r, 3a"
    match = rf"aa='{re.escape(policy)}' is not a timm .*{re.escape(reason)}.*{forms}"
    with pytest.raises(VitCompressError, match=match):
        AugmentConfig(aa=policy)


def test_policy_is_checked_before_any_data_is_touched() -> None:
    aug = AugmentConfig()
    aug.aa = "rand-m9-mstd0.5-inx1"  # set after construction, so only build_loaders can catch it
    with pytest.raises(VitCompressError, match="unknown section 'inx'") as err:
        build_loaders("/no/such/dataset", input_size=(3, 16, 16), aug=aug)
    assert "\n" not in str(err.value)


def test_data_config_and_explicit_arguments() -> None:
    train, val, _ = build_loaders(DataConfig("digits", batch_size=32), input_size=(1, 8, 8))
    assert train.batch_size == val.batch_size == 32
    train, _, _ = build_loaders(DataConfig("digits", batch_size=32), input_size=(1, 8, 8), batch_size=16)
    assert train.batch_size == 16  # an explicit argument overrides the config's field
    with pytest.raises(VitCompressError, match="batch_size must be >= 1"):
        build_loaders(DataConfig("digits"), input_size=(1, 8, 8), batch_size=0)
