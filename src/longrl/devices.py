"""Where a run computes: the one device decision, and moving models and batches there.

`trainer.device` (RL and SFT) and `longrl eval --device` take "auto", "cpu" or "cuda".
"auto" is cuda:LOCAL_RANK when CUDA is available (LOCAL_RANK is 0 outside torchrun),
else the CPU; "cpu" never touches CUDA, so it is safe on a machine whose GPUs belong to
someone else. Under torchrun `longrl.parallel.mesh.init_parallel` makes this decision
once per process; single-process commands call `select_device`.

What runs where: models, prompt batches, video embeddings, responses re-batched for a
forward, log-probs, advantages and losses live on the run device. Decoding frames,
preprocessing, tokenising, reward functions (on decoded text) and checkpoint files are
on the CPU; batches are built there and moved right before the forward.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import torch

DeviceChoice = Literal["auto", "cpu", "cuda"]
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")
_T = TypeVar("_T")


class DeviceError(ValueError):
    """The requested device is not usable here; the message says what to change."""


def local_rank() -> int:
    """This process's index on its node (torchrun's LOCAL_RANK; 0 for a plain process)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def choose_device(requested: str = "auto", rank_on_node: int = 0) -> torch.device:
    """The device of the process with local rank `rank_on_node`.

    "cpu" returns before any CUDA call. "auto" falls back to the CPU without CUDA;
    "cuda" without CUDA is an error rather than a silent CPU run. Each process of a node
    takes the GPU of its local rank, so a node needs as many visible GPUs as processes.
    """
    if requested not in DEVICE_CHOICES:
        raise DeviceError(f"device must be one of {DEVICE_CHOICES}, got {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if requested == "cuda":
            raise DeviceError(
                "device 'cuda' was asked for but CUDA is not available (no GPU, or a CPU-only "
                "torch build); use 'auto' or 'cpu'"
            )
        return torch.device("cpu")
    visible = torch.cuda.device_count()
    if rank_on_node >= visible:
        raise DeviceError(
            f"local rank {rank_on_node} needs GPU {rank_on_node} but {visible} are visible; "
            f"start at most {visible} processes per node, or set the device to 'cpu'"
        )
    return torch.device("cuda", rank_on_node)


def activate(device: torch.device) -> None:
    """Make `device` this process's current CUDA device (allocations without an explicit
    index, NCCL, DTensor go there); nothing for the CPU."""
    if device.type == "cuda":
        torch.cuda.set_device(device)


def select_device(requested: str = "auto") -> torch.device:
    """`choose_device` for this process, made current: the entry point of one-process commands."""
    device = choose_device(requested, local_rank())
    activate(device)
    return device


def module_device(module: torch.nn.Module) -> torch.device:
    """Where `module`'s weights are (a sharded parameter reports its local shard's device)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def to_device(value: _T, device: torch.device) -> _T:
    """`value` on `device`: a tensor, None, a sequence of tensors (returned as a tuple), or
    an object with its own `.to(device)` (`ModelInput`, `GroupBatch`). A tensor already
    there is returned as it is (no copy)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(to_device(item, device) for item in value)  # type: ignore[return-value]
    mover: Any = getattr(value, "to", None)
    if mover is None:
        raise TypeError(f"cannot move a {type(value).__name__} to a device")
    return mover(device)


def cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor of a state dict on the CPU, contiguous, detached (what safetensors
    writes; a run on a GPU saves the same files as a run on the CPU)."""
    return {name: tensor.detach().to("cpu").contiguous() for name, tensor in state.items()}
