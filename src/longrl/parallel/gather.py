"""Chunked all-gather: the result of one all-gather along dim 0, with bounded peak memory.

A single all_gather of a large tensor (video embeddings of a long video, a weight
shard) needs a receive buffer of world_size x the largest piece on top of the
output. Here the rows move in steps: each step gathers at most `rows_per_step`
rows from every rank into one reusable buffer and copies the valid rows to their
place in the output, so the extra memory is (world_size + 1) x rows_per_step rows.

Ranks may hold different numbers of rows (dim 0); the other dims and the dtype
must match. Sizes are exchanged first and every rank derives the same plan from
them, so all ranks run the same number of collectives. No autograd: this is for
tensors that carry no gradient (rollout embeddings, weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from longrl.parallel.errors import ParallelConfigError
from longrl.parallel.sequence import group_size

_DTYPES = (
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
)
_HEADER_DIMS = 6  # trailing dims compared one by one; more are compared by their product


@dataclass(frozen=True)
class GatherPlan:
    """How many rows each rank contributes and how many rows move per step."""

    sizes: tuple[int, ...]
    rows_per_step: int

    @property
    def steps(self) -> int:
        return -(-max(self.sizes, default=0) // self.rows_per_step)

    @property
    def offsets(self) -> tuple[int, ...]:
        starts, total = [], 0
        for size in self.sizes:
            starts.append(total)
            total += size
        return tuple(starts)


def plan_gather(
    sizes: list[int] | tuple[int, ...],
    row_bytes: int,
    *,
    num_chunks: int | None = None,
    max_chunk_bytes: int | None = None,
) -> GatherPlan:
    """Split the largest piece into `num_chunks` steps, or steps of <= `max_chunk_bytes` per rank.

    With neither, one step (a plain all-gather). A row larger than `max_chunk_bytes`
    still moves whole (one row per step).
    """
    if num_chunks is not None and max_chunk_bytes is not None:
        raise ParallelConfigError("give num_chunks or max_chunk_bytes, not both")
    largest = max(max(sizes, default=0), 1)
    if max_chunk_bytes is not None:
        if max_chunk_bytes < 1:
            raise ParallelConfigError(f"max_chunk_bytes must be >= 1, got {max_chunk_bytes}")
        rows = max(1, max_chunk_bytes // max(row_bytes, 1))
    else:
        chunks = 1 if num_chunks is None else num_chunks
        if chunks < 1:
            raise ParallelConfigError(f"num_chunks must be >= 1, got {num_chunks}")
        rows = -(-largest // chunks)
    return GatherPlan(tuple(sizes), min(rows, largest))


@torch.no_grad()
def chunked_all_gather(
    tensor: torch.Tensor,
    group: dist.ProcessGroup | None = None,
    *,
    num_chunks: int | None = None,
    max_chunk_bytes: int | None = None,
) -> torch.Tensor:
    """Every rank's `tensor` concatenated along dim 0 in rank order (sizes may differ)."""
    if tensor.dim() == 0:
        tensor = tensor.reshape(1)
    world = group_size(group)
    if world == 1:
        return tensor.clone()
    sizes = _exchange_sizes(tensor, group, world)
    row_shape = tuple(tensor.shape[1:])
    row_bytes = torch.Size(row_shape).numel() * tensor.element_size()
    plan = plan_gather(sizes, row_bytes, num_chunks=num_chunks, max_chunk_bytes=max_chunk_bytes)
    out = tensor.new_empty((sum(sizes), *row_shape))
    send = tensor.new_zeros((plan.rows_per_step, *row_shape))
    recv = [torch.empty_like(send) for _ in range(world)]
    for step in range(plan.steps):
        start = step * plan.rows_per_step
        mine = tensor[start : start + plan.rows_per_step]
        send[: mine.shape[0]].copy_(mine)
        dist.all_gather(recv, send, group=group)
        for rank, (size, offset) in enumerate(zip(plan.sizes, plan.offsets, strict=True)):
            rows = min(max(size - start, 0), plan.rows_per_step)
            if rows:
                out[offset + start : offset + start + rows].copy_(recv[rank][:rows])
    return out


def _exchange_sizes(tensor: torch.Tensor, group, world: int) -> list[int]:
    """All ranks' dim-0 sizes; raises on every rank alike if shapes or dtypes disagree."""
    trailing = list(tensor.shape[1:])
    dtype_code = _DTYPES.index(tensor.dtype) if tensor.dtype in _DTYPES else len(_DTYPES)
    compared = (trailing + [-1] * _HEADER_DIMS)[:_HEADER_DIMS]
    row_numel = torch.Size(trailing).numel()
    header = torch.tensor(
        [tensor.shape[0], tensor.dim(), dtype_code, row_numel, *compared],
        dtype=torch.long,
        device=tensor.device,
    )
    headers = [torch.empty_like(header) for _ in range(world)]
    dist.all_gather(headers, header, group=group)
    table = torch.stack(headers)
    if not bool((table[:, 1:] == table[0, 1:]).all()):
        raise ParallelConfigError(
            "chunked_all_gather: ranks disagree on dims/dtype/row shape "
            f"(rows: rank; columns: rows, ndim, dtype, row numel, dims...): {table.tolist()}"
        )
    if dtype_code == len(_DTYPES):
        raise ParallelConfigError(f"chunked_all_gather: unsupported dtype {tensor.dtype}")
    return table[:, 0].tolist()
