"""FSDP2 (`fully_shard`) for a transformers model: units, gathered phases, sum reduction.

Units, bottom-up (each is one all-gather in forward and one reduce-scatter in backward):
  - every decoder layer of the language model;
  - the vision tower (it runs on its own, before the language model);
  - the input embedding, grouped with the output embedding when they are tied;
  - the root (the rest: final norm, untied head, rotary buffers).

Why the embedding is a unit of its own: longrl builds `inputs_embeds` (video embeddings
scattered in) *before* it calls the model, so the embedding runs outside the root's
forward. Left in the root group, its gradient would arrive after the root's
post-backward reduce-scatter (which fires when the gradient of `inputs_embeds` is
computed) and be lost. As its own unit it is reduced by the root's final callback,
after the whole backward.

Gradients are *summed* over the mesh (FSDP2 averages by default): the trainer normalises
its loss by the global token count, and SP ranks each hold a partial gradient, so the
sum is the full gradient, exactly as the replicated path's all-reduce. Gloo has no
PREMUL_SUM, so the sum is forced (`set_force_sum_reduction_for_comms`).

Gathered phases: rollout and the no-grad log-prob passes call the model a different
number of times on different replicas (responses end at different lengths, batches
shrink). `gathered(model)` all-gathers every unit once, keeps them whole until the
phase ends (no collective per forward, no per-token all-gather in decoding), then frees
them. The update runs sharded: there every rank runs the same forwards and backwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, fully_shard

from longrl.parallel.errors import ParallelConfigError


def world_mesh(device_type: str):
    """A 1-D mesh over the default group (its timeout and backend; no new groups)."""
    from torch.distributed.device_mesh import DeviceMesh

    return DeviceMesh.from_group(dist.group.WORLD, device_type)


def language_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module holding the decoder `layers` and `embed_tokens` (Qwen2, Qwen2-VL, Qwen2.5-VL)."""
    for module in model.modules():
        layers = getattr(module, "layers", None)
        if isinstance(layers, torch.nn.ModuleList) and hasattr(module, "embed_tokens"):
            return module
    raise ParallelConfigError(
        f"{type(model).__name__}: no decoder with `layers` and `embed_tokens` to shard"
    )


def shard_units(model: torch.nn.Module) -> list[list[torch.nn.Module]]:
    """FSDP units below the root, bottom-up; a unit of several modules shares one group."""
    units: list[list[torch.nn.Module]] = [[layer] for layer in language_model(model).layers]
    visual = getattr(getattr(model, "model", None), "visual", None)
    if visual is not None:
        units.append([visual])
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embedding.weight
    units.append([embedding, head] if tied else [embedding])
    return units


def shard_model(model: torch.nn.Module, mesh) -> None:
    """Apply fully_shard to the units and the root, in place; gradients are summed."""
    for unit in shard_units(model):
        fully_shard(unit if len(unit) > 1 else unit[0], mesh=mesh, reshard_after_forward=True)
    # The root is needed again first thing in backward: keep it gathered after forward.
    fully_shard(model, mesh=mesh, reshard_after_forward=False)
    for module in fsdp_modules(model):
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)
    # A parameter that got no gradient on one rank still takes part (as zeros), so every
    # rank's reduce-scatters match whatever its graph touched.
    model.set_reduce_scatter_unused_params(True)
    # Make the model the root now: the vision tower and the embedding run before the
    # model's own forward, and FSDP would otherwise take the first unit called as root.
    fully_shard.state(model)._lazy_init()


def is_sharded(model: torch.nn.Module | None) -> bool:
    return isinstance(model, FSDPModule)


def fsdp_modules(model: torch.nn.Module) -> list[FSDPModule]:
    """Every FSDP module of `model`, in module order (the same on every rank)."""
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def gathered(model: torch.nn.Module) -> Iterator[None]:
    """Every unit of a sharded `model` whole for the duration (a collective on entry).

    Forwards inside make no collective, so ranks may call the model any number of times.
    On exit the units are freed again and the update's reshard policy is restored.
    """
    modules = fsdp_modules(model)
    model.set_reshard_after_forward(False)
    try:
        for module in modules:
            module.unshard()
        yield
    finally:
        for module in modules:
            module.reshard()
        model.set_reshard_after_forward(True)
        model.set_reshard_after_forward(False, recurse=False)


def clip_grad_norm(parameters: list[torch.nn.Parameter], max_norm: float) -> float:
    """Clip to the global gradient norm and return it; sharded (DTensor) gradients are
    reduced over their mesh by DTensor, plain ones are taken as they are."""
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)
