"""`build_loaders`: from a data spec (or a `DataConfig`) to train/val DataLoaders and the `DataInfo` a model needs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler

from vitcompress.data.config import AugmentConfig, DataConfig
from vitcompress.data.info import DataInfo
from vitcompress.data.mixup import check_mixup
from vitcompress.data.samplers import EpochSampler, SeededDataset
from vitcompress.data.spec import check_input_size, check_loader_args, parse_spec
from vitcompress.errors import VitCompressError


def _spec_of(spec: str | DataConfig) -> str:
    return spec.data if isinstance(spec, DataConfig) else spec


def build_datasets(
    spec: str | DataConfig,
    input_size: Sequence[int] = (3, 224, 224),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    train_augment: bool = True,
    seed: int = 0,
    aug: AugmentConfig | None = None,
) -> tuple[Dataset, Dataset, DataInfo]:
    """Train and val datasets (no loaders) for `spec`; see `build_loaders` for the arguments.

    `seed` is accepted for existing callers and unused: augmentation draws from the global generators, which
    the train loader seeds per sample (`SeededDataset`); a dataset used alone draws from them as they are.

    Raises:
        VitCompressError: the spec, path, folder layout, input size or augmentation options are wrong.
    """
    del seed
    size = check_input_size(input_size)
    if aug is not None:
        aug.validate()  # again, in case a field was set after construction: fail before touching data
    spec = _spec_of(spec)
    kind, path = parse_spec(spec)
    mean_t = None if mean is None else tuple(mean)
    std_t = None if std is None else tuple(std)
    # Imports are deferred so that `import vitcompress.data` does not pull in scikit-learn or datasets.
    if kind == "digits":
        from vitcompress.data.digits import build_digits

        return build_digits(size, mean_t, std_t, train_augment, aug)
    if kind == "cluttered-digits":
        from vitcompress.data.cluttered import build_cluttered

        return build_cluttered(size, mean_t, std_t, train_augment, aug)
    if kind == "hfds":
        from vitcompress.data.hfds import build_hfds

        return build_hfds(path, size, mean_t, std_t, train_augment, aug)
    from vitcompress.data.folder import build_folder

    name = spec if spec.startswith("folder:") else None
    return build_folder(path, size, mean_t, std_t, train_augment, name=name, aug=aug)


def describe_data(
    spec: str | DataConfig,
    input_size: Sequence[int] = (3, 224, 224),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DataInfo:
    """The `DataInfo` that `build_loaders` would return, e.g. to size a model's head before training.

    Builds the datasets (a folder scan, or the digits preprocessing) but no loaders and reads no images.
    """
    return build_datasets(spec, input_size, mean, std, train_augment=False)[2]


def _world(distributed: bool) -> tuple[int, int]:
    """`(world_size, rank)` of the process group, or `(1, 0)` when not distributed."""
    if not distributed:
        return 1, 0
    if not (dist.is_available() and dist.is_initialized()):
        raise VitCompressError(
            "distributed=True needs an initialised torch.distributed process group; run under torchrun and "
            "call init_process_group first, or pass distributed=False"
        )
    return dist.get_world_size(), dist.get_rank()


def _data_config(spec: str | DataConfig, batch_size: int | None, num_workers: int | None) -> DataConfig:
    """One `DataConfig` from either call form; explicit `batch_size` / `num_workers` override its fields."""
    check_loader_args(1 if batch_size is None else batch_size, 0 if num_workers is None else num_workers)
    overrides = {
        k: int(v) for k, v in (("batch_size", batch_size), ("workers", num_workers)) if v is not None
    }
    if isinstance(spec, DataConfig):
        spec.validate()
        return dataclasses.replace(spec, **overrides)
    parse_spec(spec)  # its messages, not DataConfig's, for a bad spec string
    return DataConfig(data=spec, **overrides)


def _loader_kwargs(cfg: DataConfig, seed: int) -> dict[str, Any]:
    pin = torch.cuda.is_available() if cfg.pin_mem is None else cfg.pin_mem
    kwargs: dict[str, Any] = dict(batch_size=cfg.batch_size, num_workers=cfg.workers, pin_memory=pin)
    if cfg.workers > 0:  # torch refuses these two without workers
        kwargs["persistent_workers"] = cfg.persistent_workers
        if cfg.prefetch_factor is not None:
            kwargs["prefetch_factor"] = cfg.prefetch_factor
    # A loader without a generator draws its workers' base seed from torch's global generator on every
    # `iter()`, which would shift the training step's randomness each epoch (and on every validation pass).
    kwargs["generator"] = torch.Generator().manual_seed(seed)
    return kwargs


def _check_mixup_epoch(aug: AugmentConfig, samples: int, batch_size: int) -> None:
    if aug.mixes and samples < batch_size:
        raise VitCompressError(
            f"the train split gives {samples} samples per process, fewer than one batch of {batch_size}, and "
            "Mixup/CutMix drops incomplete batches; use a smaller even --batch-size or more data"
        )


def build_loaders(
    spec: str | DataConfig,
    input_size: Sequence[int] = (3, 224, 224),
    batch_size: int | None = None,
    num_workers: int | None = None,
    seed: int = 0,
    distributed: bool = False,
    train_augment: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    aug: AugmentConfig | None = None,
) -> tuple[DataLoader, DataLoader, DataInfo]:
    """Train and val DataLoaders yielding `(float images (B, C, H, W), int64 targets (B,))`.

    The train loader samples with `EpochSampler` over `SeededDataset(train)`: the order of epoch e is a
    function of `(seed, e)` and each sample's augmentation of its place in the epoch, so the batches do not
    depend on the worker count or on the process (a resumed run replays them). The trainer calls
    `train_loader.sampler.set_epoch(epoch)` each epoch, and `set_start(batches_done * batch_size)` to resume
    inside one. Mixup/CutMix is not applied here: see `build_mixup`; with it on, the train loader drops the
    last incomplete batch, since Mixup needs even batches.

    Args:
        spec: `digits` or `cluttered-digits` (built-in), an ImageFolder root with `train/` and `val/` (or
            `folder:<path>`), or `hfds:<path>` for a `datasets` DatasetDict written by `save_to_disk`; or a
            `DataConfig` holding one with the loader settings (batch size, workers, pinned memory, persistent
            workers, prefetch).
        input_size: `(C, H, W)` of the yielded images, C in {1, 3}.
        batch_size: Batch size per process; None: the `DataConfig`'s (64 for a spec string).
        num_workers: DataLoader worker processes; None: the `DataConfig`'s (0 for a spec string, the fastest
            for `digits`, which lives in memory).
        seed: Seeds the shuffle and the augmentation; the built-in datasets' splits never depend on it.
        distributed: Shard both splits over the initialised process group (world size and rank from it).
        train_augment: Random augmentation on the train split (digits: small affine jitter; folders: timm's);
            False turns every option of `aug` off but the Mixup batch rules.
        mean: Per-channel normalisation mean (1 or C values); default: a built-in dataset's own, else ImageNet's.
        std: Per-channel std (1 or C values); default as for `mean`.
        aug: Augmentation options (timm's names, see `AugmentConfig`); None: today's defaults.
            `aug_repeats` turns on repeated augmentation (timm's `RepeatAugSampler`), also under DDP.

    Returns:
        `(train_loader, val_loader, info)`; each loader's sampler is `loader.sampler`.

    Raises:
        VitCompressError: bad spec, missing path, wrong folder layout, bad sizes, bad augmentation options,
            `distributed` without a process group, or Mixup with an odd batch, one class or less than one
            batch of data per process.
    """
    size = check_input_size(input_size)
    aug = aug or AugmentConfig()
    aug.validate()  # again, in case a field was set after construction: fail before touching any path
    cfg = _data_config(spec, batch_size, num_workers)
    check_mixup(aug, batch_size=cfg.batch_size)
    world, rank = _world(distributed)
    train, val, info = build_datasets(cfg, size, mean, std, train_augment, aug=aug)
    check_mixup(aug, num_classes=info.num_classes)
    sampler = EpochSampler(train, num_replicas=world, rank=rank, seed=seed, repeats=aug.aug_repeats)
    _check_mixup_epoch(aug, len(sampler), cfg.batch_size)
    train_loader = DataLoader(SeededDataset(train), sampler=sampler, drop_last=aug.mixes, **_loader_kwargs(cfg, seed))
    val_sampler = (
        DistributedSampler(val, num_replicas=world, rank=rank, shuffle=False) if distributed else SequentialSampler(val)
    )
    val_loader = DataLoader(val, sampler=val_sampler, **_loader_kwargs(cfg, seed))
    return train_loader, val_loader, info
