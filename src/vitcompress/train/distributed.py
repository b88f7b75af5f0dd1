"""Process-group helpers, the nanoGPT way: one script runs as `python ...` or under `torchrun`.

`torchrun` exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; their presence is what turns
distributed mode on. Nothing here reads any other launcher's variables.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from vitcompress.errors import VitCompressError


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: Global rank, 0 in a single-process run.
        world_size: Number of processes, 1 in a single-process run.
        local_rank: Rank on this machine; picks the CUDA device.
        device: The device this process should train on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        """True when a process group is initialised (even with world_size 1 under torchrun)."""
        return dist.is_available() and dist.is_initialized()

    @property
    def main(self) -> bool:
        """True on the one process that writes files and prints."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables are present."""
    return "RANK" in os.environ


def setup_distributed(backend: str | None = None) -> DistInfo:
    """Initialise the default process group if launched by torchrun, and describe this process.

    Idempotent: calling it again, or after the caller initialised the group itself (e.g. under
    `torch.multiprocessing.spawn`), describes the existing group.

    Args:
        backend: Process-group backend; default nccl when CUDA is available, else gloo.

    Returns:
        The process's rank, world size, local rank and device (cuda:LOCAL_RANK, cuda, or cpu).
    """
    cuda = torch.cuda.is_available()
    initialised = dist.is_available() and dist.is_initialized()
    if not initialised and not launched_by_torchrun():
        return DistInfo(0, 1, 0, torch.device("cuda" if cuda else "cpu"))
    try:
        rank = dist.get_rank() if initialised else int(os.environ["RANK"])
        world_size = dist.get_world_size() if initialised else int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as e:
        raise VitCompressError(
            f"RANK is set but the torchrun environment is incomplete or malformed ({e}); launch with "
            "torchrun or unset RANK"
        ) from e
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        # Before init so NCCL binds each process to its own GPU instead of all piling onto cuda:0.
        torch.cuda.set_device(device)
    if not initialised:
        backend = backend or ("nccl" if cuda else "gloo")
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, device)


def cleanup() -> None:
    """Destroy the default process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place (a no-op without a process group) and return it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
