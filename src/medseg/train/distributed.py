"""Training on several processes with torch's own engine (``torchrun``, DistributedDataParallel).

``torchrun --nproc-per-node N -m medseg.train DATA --out RUN ...`` starts ``N`` processes
with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set;
:func:`init_distributed` joins them (NCCL on CUDA, gloo on CPU). Each rank draws its share of
every global batch (:class:`~medseg.train.patches.StreamSampler`), DDP averages the
gradients, rank 0 alone writes the run directory, validation cases are split over the ranks
and their scores gathered, and the stop decision of a time-budgeted run is rank 0's, sent to
every rank each step, so all ranks make the same number of steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from medseg.errors import ConfigError

__all__ = ["Distributed", "init_distributed"]


@dataclass(frozen=True)
class Distributed:
    """This process's place in a distributed run.

    Attributes:
        rank: global rank, ``0..world-1`` (rank 0 writes the run directory).
        world: number of processes.
        local_rank: rank on this machine (its CUDA device index).
        backend: ``"nccl"`` or ``"gloo"``.
    """

    rank: int
    world: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    def gather_dict(self, part: dict[str, Any]) -> dict[str, Any]:
        """Join every rank's dict (keys are disjoint: validation cases)."""
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, part)
        out: dict[str, Any] = {}
        for p in parts:
            out.update(p)
        return out

    def mean(self, value: Any) -> float:
        """The mean of a scalar tensor over the ranks (the logged loss of a step)."""
        import torch.distributed as dist

        t = value.float().reshape(1).clone()
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object)."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any_flag(self, flag: bool) -> bool:
        """True on every rank when rank 0's flag is set (cheap: one tensor)."""
        import torch
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        if self.backend == "nccl":
            t = t.cuda()
        dist.broadcast(t, src=0)
        return bool(t.item())

    def barrier(self) -> None:
        """Wait for every rank."""
        import torch.distributed as dist

        dist.barrier()

    def close(self) -> None:
        """Leave the process group (after the last barrier)."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device_type: str) -> Distributed | None:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1), else ``None``.

    Raises:
        ConfigError: torchrun variables that are not integers.
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise ConfigError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers ({exc})") from None
    if world <= 1:
        return None
    import torch
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Distributed(rank, world, local, backend)
