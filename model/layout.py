"""Who this process is among the processes of a run: rank, world size, local rank and the
DataLoader workers it feeds; and joining / leaving the torchrun process group.

The one owner of the rank/world layout: the trainer asks for it once (``join_process_group``),
the streams shard their chunks by it, and checkpoints record its ``to_dict`` (world size and
workers: what the data order depends on).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from lymph.data.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Layout:
    """This process among ``world_size`` ranks; ``workers`` as given to the DataLoader (0 =
    none); ``local_rank``: its GPU on this machine (torchrun's LOCAL_RANK)."""

    rank: int = 0
    world_size: int = 1
    workers: int = 0
    local_rank: int = 0

    def __post_init__(self) -> None:
        for name in ("rank", "world_size", "workers", "local_rank"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {v!r}")
        if not self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} is not below the world size {self.world_size}")

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates and writes."""
        return self.rank == 0

    @property
    def per_rank(self) -> int:
        return max(self.workers, 1)

    @property
    def n_shards(self) -> int:
        return self.world_size * self.per_rank

    def to_dict(self) -> dict[str, int]:
        return {"world_size": self.world_size, "workers": self.workers}


def join_process_group(device_kind: str, *, workers: int) -> Layout:
    """This process's layout; joins the torchrun process group when WORLD_SIZE > 1 (nccl on
    CUDA, gloo otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Layout(workers=workers)
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Layout(rank=dist.get_rank(), world_size=dist.get_world_size(), workers=workers,
                  local_rank=int(os.environ.get("LOCAL_RANK", "0")))  # fmt: skip


def leave_process_group(layout: Layout) -> None:
    """Wait for every rank, then leave the process group (nothing for a single process)."""
    if layout.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. an early-stop decision all ranks must share)."""
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())
