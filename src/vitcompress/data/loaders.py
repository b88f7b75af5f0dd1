"""`build_loaders`: from a data spec string to train/val DataLoaders and the `DataInfo` a model needs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler
from torch.utils.data.sampler import Sampler

from vitcompress.data.info import DataInfo
from vitcompress.data.spec import check_input_size, check_loader_args, parse_spec
from vitcompress.errors import VitCompressError


def build_datasets(
    spec: str,
    input_size: Sequence[int] = (3, 224, 224),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    train_augment: bool = True,
    seed: int = 0,
) -> tuple[Dataset, Dataset, DataInfo]:
    """Train and val datasets (no loaders) for `spec`; see `build_loaders` for the arguments.

    Raises:
        VitCompressError: the spec, path, folder layout or input size is wrong.
    """
    size = check_input_size(input_size)
    kind, path = parse_spec(spec)
    mean_t = None if mean is None else tuple(mean)
    std_t = None if std is None else tuple(std)
    # Imports are deferred so that `import vitcompress.data` does not pull in scikit-learn or datasets.
    if kind == "digits":
        from vitcompress.data.digits import build_digits

        return build_digits(size, mean_t, std_t, train_augment, seed)
    if kind == "hfds":
        from vitcompress.data.hfds import build_hfds

        return build_hfds(path, size, mean_t, std_t, train_augment)
    from vitcompress.data.folder import build_folder

    name = spec if spec.startswith("folder:") else None
    return build_folder(path, size, mean_t, std_t, train_augment, name=name)


def describe_data(
    spec: str,
    input_size: Sequence[int] = (3, 224, 224),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DataInfo:
    """The `DataInfo` that `build_loaders` would return, e.g. to size a model's head before training.

    Builds the datasets (a folder scan, or the digits preprocessing) but no loaders and reads no images.
    """
    return build_datasets(spec, input_size, mean, std, train_augment=False)[2]


def _rank() -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        raise VitCompressError(
            "distributed=True needs an initialised torch.distributed process group; run under torchrun and "
            "call init_process_group first, or pass distributed=False"
        )
    return dist.get_rank(), dist.get_world_size()


def _samplers(train: Dataset, val: Dataset, seed: int, distributed: bool) -> tuple[Sampler, Sampler]:
    if distributed:
        # Same seed on every rank: DistributedSampler shuffles identically everywhere, then shards by rank.
        return DistributedSampler(train, shuffle=True, seed=seed), DistributedSampler(val, shuffle=False)
    return RandomSampler(train, generator=torch.Generator().manual_seed(seed)), SequentialSampler(val)


def build_loaders(
    spec: str,
    input_size: Sequence[int] = (3, 224, 224),
    batch_size: int = 64,
    num_workers: int = 0,
    seed: int = 0,
    distributed: bool = False,
    train_augment: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[DataLoader, DataLoader, DataInfo]:
    """Train and val DataLoaders yielding `(float images (B, C, H, W), int64 targets (B,))`.

    Args:
        spec: `digits` (built-in), an ImageFolder root with `train/` and `val/` (or `folder:<path>`), or
            `hfds:<path>` for a `datasets` DatasetDict written by `save_to_disk`.
        input_size: `(C, H, W)` of the yielded images, C in {1, 3}.
        batch_size: Batch size per process.
        num_workers: DataLoader worker processes; 0 is fastest for `digits`, which lives in memory.
        seed: Seeds the shuffle and the augmentation; the digits train/val split never depends on it.
        distributed: Shard both splits with `DistributedSampler` over the initialised process group. The
            trainer must call `train_loader.sampler.set_epoch(epoch)` each epoch, or every epoch repeats the
            same order.
        train_augment: Random augmentation on the train split (digits: small affine jitter; folders: timm's).
        mean: Per-channel normalisation mean (1 or C values); default: digits' own, ImageNet's otherwise.
        std: Per-channel normalisation std (1 or C values); default as for `mean`.

    Returns:
        `(train_loader, val_loader, info)`; each loader's sampler is `loader.sampler`.

    Raises:
        VitCompressError: bad spec, missing path, wrong folder layout, bad sizes, or `distributed` without a
            process group.
    """
    check_loader_args(batch_size, num_workers)
    rank = _rank()[0] if distributed else 0
    # Offset by rank so that ranks draw different augmentations for their different samples.
    train, val, info = build_datasets(spec, input_size, mean, std, train_augment, seed + rank)
    train_sampler, val_sampler = _samplers(train, val, seed, distributed)
    common = dict(
        batch_size=int(batch_size),
        num_workers=int(num_workers),
        pin_memory=torch.cuda.is_available(),
        persistent_workers=int(num_workers) > 0,
    )
    # The loader's own generator seeds its workers (torch and `random`), which makes worker-side augmentation
    # reproducible; it is apart from the shuffle generator so that adding workers does not change the order.
    train_loader = DataLoader(
        train, sampler=train_sampler, generator=torch.Generator().manual_seed(seed + rank), **common
    )
    val_loader = DataLoader(val, sampler=val_sampler, **common)
    return train_loader, val_loader, info
