"""Process groups for data parallel x sequence parallel, initialised from torchrun.

Rank layout: `rank = dp_rank * sp + sp_rank`. The ranks of one sequence-parallel
group are contiguous, so on GPU nodes they share a node and its fast links, where
the per-layer all-to-alls of Ulysses attention run.

The same code runs on CPU (gloo) and GPU (NCCL for CUDA tensors, gloo for CPU
tensors). Without torchrun variables it makes a one-process world, so single-process
runs take the same code path. Every collective has a timeout (a hung peer raises
an error instead of blocking forever).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from longrl import devices
from longrl.parallel.errors import ParallelConfigError

DEFAULT_TIMEOUT = timedelta(minutes=10)
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class ParallelLayout:
    """`dp` data-parallel replicas, each split over `sp` sequence-parallel ranks."""

    dp: int = 1
    sp: int = 1

    def __post_init__(self) -> None:
        for name in ("dp", "sp"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ParallelConfigError(
                    f"ParallelLayout.{name} must be an int >= 1, got {value!r}"
                )

    @classmethod
    def for_world(cls, world_size: int, sp: int) -> ParallelLayout:
        """Use every rank: dp = world_size / sp."""
        if sp < 1 or world_size % sp:
            raise ParallelConfigError(
                f"sequence-parallel size sp={sp} must divide the world size {world_size}; "
                "set sp to a divisor of the number of processes"
            )
        return cls(dp=world_size // sp, sp=sp)

    @property
    def world_size(self) -> int:
        return self.dp * self.sp

    def coordinates(self, rank: int) -> tuple[int, int]:
        """(dp_rank, sp_rank) of a global rank."""
        return divmod(rank, self.sp)

    def sp_group_ranks(self, dp_rank: int) -> list[int]:
        return [dp_rank * self.sp + s for s in range(self.sp)]

    def dp_group_ranks(self, sp_rank: int) -> list[int]:
        return [d * self.sp + sp_rank for d in range(self.dp)]


@dataclass(frozen=True)
class ParallelContext:
    """This rank's place in the layout and its process groups."""

    layout: ParallelLayout
    rank: int
    local_rank: int
    device: torch.device
    backend: str
    sp_group: dist.ProcessGroup
    dp_group: dist.ProcessGroup

    @property
    def world_size(self) -> int:
        return self.layout.world_size

    @property
    def dp_rank(self) -> int:
        return self.layout.coordinates(self.rank)[0]

    @property
    def sp_rank(self) -> int:
        return self.layout.coordinates(self.rank)[1]

    def device_mesh(self):
        """A 2-D DeviceMesh ("dp", "sp") over the same groups (for FSDP2 and DTensor)."""
        from torch.distributed.device_mesh import DeviceMesh

        mesh = torch.arange(self.world_size).view(self.layout.dp, self.layout.sp)
        return DeviceMesh.from_group(
            [self.dp_group, self.sp_group],
            self.device.type,
            mesh=mesh,
            mesh_dim_names=("dp", "sp"),
        )


def default_backend(device: torch.device) -> str:
    """NCCL for CUDA tensors and gloo for CPU tensors when this process computes on a GPU
    (small bookkeeping collectives stay on CPU tensors); gloo otherwise."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init_parallel(
    sp: int = 1,
    *,
    dp: int | None = None,
    timeout: timedelta = DEFAULT_TIMEOUT,
    backend: str | None = None,
    device: str = "auto",
) -> ParallelContext:
    """Initialise torch.distributed from the torchrun environment and build the dp x sp groups.

    `dp` defaults to world_size / sp. Without torchrun variables (plain `python`), a
    one-process world is created. All ranks must call this with the same arguments.
    `device` ("auto", "cpu", "cuda") picks this rank's device (`longrl.devices.choose_device`:
    cuda:LOCAL_RANK or the CPU); it sets the default backend.
    """
    if not isinstance(timeout, timedelta):
        raise ParallelConfigError(f"timeout must be a datetime.timedelta, got {timeout!r}")
    local_rank = devices.local_rank()
    chosen = devices.choose_device(device, local_rank)
    devices.activate(chosen)
    backend = backend or default_backend(chosen)
    if not dist.is_initialized():
        _init_default_group(backend, timeout, chosen)
    world_size, rank = dist.get_world_size(), dist.get_rank()
    layout = ParallelLayout.for_world(world_size, sp) if dp is None else ParallelLayout(dp, sp)
    if layout.world_size != world_size:
        raise ParallelConfigError(
            f"layout dp={layout.dp} x sp={layout.sp} needs {layout.world_size} processes, "
            f"but the world has {world_size}; launch with torchrun --nproc-per-node "
            f"{layout.world_size} (times nodes) or change dp/sp"
        )
    my_dp, my_sp = layout.coordinates(rank)
    # new_group is collective over the whole world: every rank creates every group, in order.
    sp_group = dp_group = None
    for d in range(layout.dp):
        group = dist.new_group(layout.sp_group_ranks(d), timeout=timeout)
        if d == my_dp:
            sp_group = group
    for s in range(layout.sp):
        group = dist.new_group(layout.dp_group_ranks(s), timeout=timeout)
        if s == my_sp:
            dp_group = group
    return ParallelContext(
        layout=layout,
        rank=rank,
        local_rank=local_rank,
        device=chosen,
        backend=backend,
        sp_group=sp_group,
        dp_group=dp_group,
    )


def destroy_parallel() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _init_default_group(backend: str, timeout: timedelta, device: torch.device) -> None:
    present = [name for name in _TORCHRUN_VARS if name in os.environ]
    device_id = device if device.type == "cuda" else None
    if not present:
        # Plain `python`: a one-process world, so callers never special-case "no distributed".
        dist.init_process_group(
            backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout
        )
        return
    missing = [name for name in _TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise ParallelConfigError(
            f"torchrun environment incomplete: {', '.join(missing)} unset "
            f"(found {', '.join(present)}); launch with torchrun or set all of {_TORCHRUN_VARS}"
        )
    dist.init_process_group(
        backend,
        init_method="env://",
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=timeout,
        device_id=device_id,
    )
