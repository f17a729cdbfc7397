"""The RL trainer across processes: data parallel x sequence parallel, one code path.

Launched by `torchrun` (or `longrl rl --nproc N`), every process runs the same
loop. `ulysses_sequence_parallel_size` (sp) consecutive ranks form a
sequence-parallel group: they hold the same prompts, split each video's frames
for the vision tower and each sequence for the language model. The dp = world/sp
groups hold different prompts. Plain `python` is a world of one and every
collective here is skipped, so a single-process run computes exactly what it
did before distribution existed.

Rules every function here keeps:
- every rank takes the same branch before every collective (decisions come from
  config, from values already reduced, or from data all SP ranks share);
- no pickle: values cross ranks as tensors, or as JSON bytes in a uint8 tensor;
- every collective has the configured timeout (`trainer.collective_timeout_s`);
  a rank that dies or hangs turns into an error on the others, never a hang.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from longrl.config.root import RunConfig
from longrl.parallel import fsdp
from longrl.parallel.errors import ParallelConfigError
from longrl.parallel.fsdp_state import full_model_state, full_optimizer_state
from longrl.parallel.gather import chunked_all_gather
from longrl.parallel.mesh import ParallelContext, init_parallel
from longrl.train.checkpoint import model_state

logger = logging.getLogger("longrl.train")

_GRAD_BUCKET_ELEMENTS = 8 * 1024 * 1024  # floats per gradient all-reduce
# Backend errors that are not DistError subclasses name their backend (gloo source paths).
_COLLECTIVE_MARKERS = ("gloo", "nccl")


class DistributedRunError(RuntimeError):
    """This rank stopped because a collective failed or another rank failed first."""


@dataclass
class TrainerParallel:
    context: ParallelContext
    owns_process_group: bool
    timeout_s: float
    # FSDP2 over the whole world (worker.actor.fsdp.enable with more than one process).
    shards_weights: bool = False

    @property
    def rank(self) -> int:
        return self.context.rank

    @property
    def world_size(self) -> int:
        return self.context.world_size

    @property
    def dp(self) -> int:
        return self.context.layout.dp

    @property
    def sp(self) -> int:
        return self.context.layout.sp

    @property
    def dp_rank(self) -> int:
        return self.context.dp_rank

    @property
    def device(self) -> torch.device:
        """This rank's device (trainer.device): models, batches and losses live there."""
        return self.context.device

    @property
    def sp_group(self):
        return self.context.sp_group if self.sp > 1 else None

    @property
    def is_main(self) -> bool:
        """Writes metrics and checkpoints."""
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank}/{self.world_size} (dp {self.dp_rank}/{self.dp}, sp {self.sp})"

    # --- reductions ------------------------------------------------------------------

    def gather_json(self, value: Any, over: str = "dp") -> list[Any]:
        """Every rank's JSON-able `value`, in rank order, over the dp group or the whole world.

        Over "dp", ranks of one sequence-parallel group get the same answer (each
        gathers over its own dp group, whose members hold the same data as theirs).
        """
        group, size = self._group(over)
        if size == 1:
            return [value]
        payload = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8)
        sizes = torch.tensor([payload.numel()], dtype=torch.long)
        every = [torch.empty_like(sizes) for _ in range(size)]
        dist.all_gather(every, sizes, group=group)
        joined = chunked_all_gather(payload, group)
        out, start = [], 0
        for count in (int(s) for s in every):
            out.append(json.loads(joined[start : start + count].numpy().tobytes()))
            start += count
        return out

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every replica's rows (dim 0, sizes may differ), concatenated in dp-rank order."""
        if self.dp == 1:
            return tensor
        return chunked_all_gather(tensor, self.context.dp_group)

    def sum_over_dp(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of a float64 tensor over the dp group (identity with dp = 1)."""
        if self.dp == 1:
            return values
        total = values.to(torch.float64).clone()
        dist.all_reduce(total, group=self.context.dp_group)
        return total

    def everyone(self, flag: bool) -> bool:
        """True iff `flag` is true on every rank."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.long)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def sum_gradients(self, model: torch.nn.Module) -> None:
        """Sum trainable gradients over every rank: over SP this completes each rank's
        partial gradient, over DP it adds the shares of a loss normalised globally.
        (Sharded: FSDP's reduce-scatter in backward has already summed them.)"""
        if self.world_size == 1 or fsdp.is_sharded(model):
            return
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:  # every rank reduces the same tensors, used or not
                p.grad = torch.zeros_like(p)
        for bucket in _buckets(params, _GRAD_BUCKET_ELEMENTS):
            flat = torch.cat([p.grad.reshape(-1) for p in bucket])
            dist.all_reduce(flat)
            offset = 0
            for p in bucket:
                p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
                offset += p.numel()

    def check_in_sync(self, model: torch.nn.Module) -> None:
        """Raise on every rank if the replicas' weights differ (a bug, or ranks that loaded
        different checkpoints); cheap: two float64 sums per parameter tensor. A sharded
        model has no replicas to compare (each element lives on one rank)."""
        if self.world_size == 1 or fsdp.is_sharded(model):
            return
        sums = [
            [float(p.detach().double().sum()), float(p.detach().double().abs().sum())]
            for p in model.parameters()
        ]
        every = self.gather_json(sums, over="world")
        differ = [r for r, theirs in enumerate(every) if theirs != every[0]]
        if differ:
            raise DistributedRunError(
                f"model weights differ between rank 0 and ranks {differ}: the replicas are out "
                "of sync (did every rank load the same checkpoint? is output_dir shared?)"
            )

    # --- FSDP ------------------------------------------------------------------------

    def shard(self, model: torch.nn.Module | None) -> None:
        """FSDP2 over every rank (dp x sp), when this run shards weights. The model must
        already be on this rank's device (FSDP2 shards where the parameters are)."""
        if model is None or not self.shards_weights:
            return
        device = next(model.parameters()).device
        fsdp.shard_model(model, fsdp.world_mesh(device.type))

    def gathered(self, model: torch.nn.Module | None):
        """Context: a sharded model's weights whole on every rank (see `fsdp.gathered`)."""
        if not fsdp.is_sharded(model):
            return contextlib.nullcontext()
        return fsdp.gathered(model)

    def full_weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """The model's full state dict on rank 0 (None elsewhere). Every rank calls this:
        gathering a sharded model's tensors is collective."""
        if not fsdp.is_sharded(model):
            return model_state(model) if self.is_main else None
        return full_model_state(model, keep=self.is_main)

    def full_optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict | None:
        """The optimizer's full state dict on rank 0 (None elsewhere); every rank calls it."""
        sharded = any(
            isinstance(p, DTensor) for group in optimizer.param_groups for p in group["params"]
        )
        if not sharded:
            return optimizer.state_dict() if self.is_main else None
        return full_optimizer_state(optimizer, keep=self.is_main)

    def _group(self, over: str):
        if over == "dp":
            return self.context.dp_group, self.dp
        if over == "world":
            return dist.group.WORLD, self.world_size
        raise ValueError(f"over must be 'dp' or 'world', got {over!r}")

    # --- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()

    def explain(self, err: BaseException) -> BaseException:
        """The error this rank exits with: a failed collective says what probably happened."""
        if self.world_size == 1 or isinstance(err, DistributedRunError):
            return err
        text = str(err)
        if isinstance(err, dist.DistError) or (
            isinstance(err, RuntimeError) and any(m in text.lower() for m in _COLLECTIVE_MARKERS)
        ):
            return DistributedRunError(
                f"{self.describe()}: a collective failed: {text.strip()[:500]}\n"
                "Another rank probably crashed or was killed (its log has the first error), "
                "or did not reach this collective within trainer.collective_timeout_s="
                f"{self.timeout_s:g}s."
            )
        return err


def _buckets(params: list[torch.nn.Parameter], limit: int) -> list[list[torch.nn.Parameter]]:
    out: list[list[torch.nn.Parameter]] = []
    size = limit
    for p in params:
        if size + p.numel() > limit and (not out or out[-1]):
            out.append([])
            size = 0
        out[-1].append(p)
        size += p.numel()
    return out


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_launch(config: RunConfig, world_size: int) -> None:
    """The launched world must fit the recipe's layout, before any model is loaded."""
    trainer = config.trainer
    sp = config.worker.actor.ulysses_sequence_parallel_size
    planned = trainer.nnodes * trainer.n_gpus_per_node
    if planned > 1 and planned != world_size:
        raise ParallelConfigError(
            f"trainer.nnodes={trainer.nnodes} x trainer.n_gpus_per_node="
            f"{trainer.n_gpus_per_node} = {planned} processes, but {world_size} were launched; "
            f"launch with torchrun --nnodes {trainer.nnodes} --nproc-per-node "
            f"{trainer.n_gpus_per_node} (or `longrl rl ... --nproc {planned}` on one machine)"
        )
    if config.worker.rollout.name != "builtin" and world_size > 1:
        raise ParallelConfigError(
            f"worker.rollout.name={config.worker.rollout.name} runs in one process for now; "
            f"with {world_size} processes use worker.rollout.name=builtin"
        )
    if config.worker.actor.fsdp.enable and world_size > 1 and config.data.cache_dir is not None:
        raise ParallelConfigError(
            "data.cache_dir with worker.actor.fsdp.enable is not built yet: cache keys hash "
            "the vision tower's weights, which FSDP splits across ranks; drop one of the two"
        )
    if world_size % sp:
        raise ParallelConfigError(
            f"worker.actor.ulysses_sequence_parallel_size={sp} must divide the number of "
            f"processes ({world_size})"
        )
    dp = world_size // sp
    batch, mini = config.data.rollout_batch_size, config.worker.actor.global_batch_size
    if mini % dp:
        raise ParallelConfigError(
            f"worker.actor.global_batch_size={mini} prompts per optimizer step cannot be split "
            f"over {dp} data-parallel replicas (world {world_size} / sp {sp}); make it a "
            f"multiple of {dp} (data.rollout_batch_size={batch} is then split alike)"
        )


def start_parallel(config: RunConfig) -> TrainerParallel:
    """Join (or create, for plain `python`) the process group and build the dp x sp groups."""
    world_size = launched_world_size()
    check_launch(config, world_size)
    owns = not dist.is_initialized()
    timeout_s = config.trainer.collective_timeout_s
    context = init_parallel(
        config.worker.actor.ulysses_sequence_parallel_size,
        timeout=timedelta(seconds=timeout_s),
        device=config.trainer.device,
    )
    shards = config.worker.actor.fsdp.enable and context.world_size > 1
    parallel = TrainerParallel(context, owns, timeout_s, shards_weights=shards)
    if parallel.world_size > 1:
        logger.info(
            "%s on %s, collective timeout %gs, %s",
            parallel.describe(),
            parallel.device,
            timeout_s,
            "weights sharded (FSDP2)" if shards else "weights replicated",
        )
    else:
        logger.info("training on %s", parallel.device)
    return parallel


def dp_share(count: int, mini_batch: int, dp: int, dp_rank: int) -> list[int]:
    """Positions (of a global batch of `count` prompts) that replica `dp_rank` holds.

    Each mini-batch (optimizer step) of `mini_batch` prompts is split into dp equal
    contiguous parts, so every replica's k-th local mini-batch is its part of the
    global k-th one: DP=2 updates on the same prompts per step as DP=1.
    """
    part = mini_batch // dp
    return [
        start + dp_rank * part + i
        for start in range(0, count, mini_batch)
        for i in range(part)
        if start + dp_rank * part + i < count
    ]
