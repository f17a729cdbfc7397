"""Full (consolidated) state dicts from sharded models and optimizers, and back.

Checkpoints hold full tensors in the same layout with or without FSDP, so `longrl
export`, `longrl eval` and resume read them unchanged, and a run may resume with a
different world size or with FSDP switched on or off.

Saving: every rank calls `full_model_state` / `full_optimizer_state` in the same order
(each sharded tensor is one all-gather); only the rank that writes keeps the result.
Loading: every rank reads the same file and keeps its own shard (`shard_like`); no
collective, so it costs nothing when the tensors are plain.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor (an all-gather for a DTensor; the tensor itself otherwise)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_model_state(model: torch.nn.Module, keep: bool) -> dict[str, torch.Tensor] | None:
    """Full tensors of `model.state_dict()`, tied entries once (the first name), on the
    ranks with `keep` (None elsewhere). Collective when the model is sharded."""
    state: dict[str, torch.Tensor] = {}
    tied = set(tied_duplicate_names(model))
    for name, tensor in model.state_dict().items():
        if name in tied:
            continue  # the same parameter under a later name; loading re-ties
        whole = full_tensor(tensor).detach()
        if keep:  # to the CPU as it arrives: the whole model never sits on the GPU
            state[name] = whole.cpu()
    return state if keep else None


def full_optimizer_state(optimizer: torch.optim.Optimizer, keep: bool) -> dict[str, Any] | None:
    """`optimizer.state_dict()` with every sharded state tensor gathered whole, on the
    ranks with `keep`. Every rank walks the same parameters in the same order."""
    state = optimizer.state_dict()
    gathered: dict[int, dict[str, Any]] = {}
    for index in sorted(state["state"]):
        values = {
            key: full_tensor(value).detach() if isinstance(value, torch.Tensor) else value
            for key, value in sorted(state["state"][index].items())
        }
        if keep:  # to the CPU per parameter, as with the weights
            gathered[index] = {
                key: value.cpu() if isinstance(value, torch.Tensor) else value
                for key, value in values.items()
            }
    return {"state": gathered, "param_groups": state["param_groups"]} if keep else None


def shard_like(reference: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """`full` laid out like `reference`: this rank's shard when `reference` is a DTensor.

    Every rank holds the same `full` (read from one file, on the CPU), so each takes its
    own piece locally (no scatter from a source rank), on the device of its shard.
    """
    if not isinstance(reference, DTensor):
        return full
    return distribute_tensor(
        full.to(device=reference.device, dtype=reference.dtype),
        reference.device_mesh,
        reference.placements,
        src_data_rank=None,
    )


def sharded_model_state(
    model: torch.nn.Module, full: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A full state dict with each entry laid out like the model's own tensor."""
    own = model.state_dict()
    return {
        name: shard_like(own[name], tensor) if name in own else tensor
        for name, tensor in full.items()
    }


def sharded_optimizer_state(
    optimizer: torch.optim.Optimizer, full: dict[str, Any]
) -> dict[str, Any]:
    """A full optimizer state dict with each per-parameter tensor laid out like its
    parameter (scalars such as `step` stay as they are)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for index, values in full["state"].items():
        param = params[int(index)]
        state[index] = {
            key: shard_like(param, value)
            if isinstance(value, torch.Tensor) and value.shape == param.shape
            else value
            for key, value in values.items()
        }
    return {"state": state, "param_groups": full["param_groups"]}


def tied_duplicate_names(model: torch.nn.Module) -> list[str]:
    """Names under which a parameter appears again (tied weights), from the module tree
    alone, so every rank skips the same entries whatever its shard holds."""
    first = {name for name, _ in model.named_parameters()}
    return [name for name, _ in model.named_parameters(remove_duplicate=False) if name not in first]
