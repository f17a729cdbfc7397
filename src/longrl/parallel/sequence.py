"""Autograd-correct collectives for sequence parallelism.

Gradient convention (the one DeepSpeed-Ulysses uses): every rank of a sequence-
parallel group holds the same batch; each rank computes its shard of tokens; the
loss is computed identically on every rank from gathered outputs. Then each rank's
parameter gradients hold the contribution of the work done on that rank, and the
full gradient is their SUM over the sequence-parallel group. Hence:

- `shard_sequence` is a slice: its backward puts the local gradient in place and
  zeros elsewhere (the other ranks contribute the other slices to the sum).
- `gather_sequence` is an all-gather: its backward is the slice of this rank's part
  (the gradient of the replicated loss w.r.t. the gathered tensor is the same on
  every rank, so no reduction is needed).
- `seq_to_heads` / `heads_to_seq` are all-to-alls: pure permutations of data across
  ranks, so each one's backward is the other.

A group of size 1 makes every function here the identity (no collective).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def group_size(group: dist.ProcessGroup | None) -> int:
    return dist.get_world_size(group) if group is not None else 1


def group_rank(group: dist.ProcessGroup | None) -> int:
    return dist.get_rank(group) if group is not None else 0


def shard_sequence(tensor: torch.Tensor, dim: int, group: dist.ProcessGroup | None) -> torch.Tensor:
    """This rank's contiguous chunk of `tensor` along `dim` (size must divide evenly)."""
    size = group_size(group)
    length = tensor.shape[dim]
    if length % size:
        raise ValueError(
            f"cannot shard length {length} over {size} ranks; pad it to a multiple first"
        )
    local = length // size
    return tensor.narrow(dim, group_rank(group) * local, local)


def gather_sequence(
    tensor: torch.Tensor,
    dim: int,
    group: dist.ProcessGroup | None,
    sizes: list[int] | None = None,
) -> torch.Tensor:
    """Concatenate every rank's `tensor` along `dim`, in rank order.

    `sizes[r]` is rank r's length along `dim` (default: all equal). Every rank must
    pass the same `sizes`; uneven lengths are padded for the collective and trimmed.
    """
    size = group_size(group)
    if size == 1:
        return tensor
    sizes = list(sizes) if sizes is not None else [tensor.shape[dim]] * size
    if len(sizes) != size or sizes[group_rank(group)] != tensor.shape[dim]:
        raise ValueError(f"sizes {sizes} do not match this rank's length {tensor.shape[dim]}")
    return _GatherSequence.apply(tensor, dim, group, tuple(sizes))


def seq_to_heads(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """[B, H, S, D] (local sequence, all heads) -> [B, H/sp, sp*S, D] (full sequence, head shard).

    The full sequence is rank-major: rank 0's S positions, then rank 1's, ...
    """
    if group_size(group) == 1:
        return x
    return _SeqToHeads.apply(x, group)


def heads_to_seq(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """Inverse of `seq_to_heads`: [B, h, sp*S, D] -> [B, h*sp, S, D]."""
    if group_size(group) == 1:
        return x
    return _HeadsToSeq.apply(x, group)


def _all_to_all_seq_to_heads(x: torch.Tensor, group) -> torch.Tensor:
    size = group_size(group)
    batch, heads, seq, dim = x.shape
    # Chunk j (head group j) goes to rank j; chunk i received holds rank i's positions.
    send = x.reshape(batch, size, heads // size, seq, dim).permute(1, 0, 2, 3, 4).contiguous()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    return recv.permute(1, 2, 0, 3, 4).reshape(batch, heads // size, size * seq, dim)


def _all_to_all_heads_to_seq(x: torch.Tensor, group) -> torch.Tensor:
    size = group_size(group)
    batch, heads, full, dim = x.shape
    seq = full // size
    # Chunk j (positions of rank j) goes to rank j; chunk i received holds head group i.
    send = x.reshape(batch, heads, size, seq, dim).permute(2, 0, 1, 3, 4).contiguous()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    return recv.permute(1, 0, 2, 3, 4).reshape(batch, size * heads, seq, dim)


class _SeqToHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_to_all_seq_to_heads(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _all_to_all_heads_to_seq(grad.contiguous(), ctx.group), None


class _HeadsToSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_to_all_heads_to_seq(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _all_to_all_seq_to_heads(grad.contiguous(), ctx.group), None


class _GatherSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, dim, group, sizes):
        rank = group_rank(group)
        ctx.dim, ctx.start, ctx.length = dim, sum(sizes[:rank]), sizes[rank]
        longest = max(sizes)
        padded = tensor
        if tensor.shape[dim] < longest:
            pad_shape = list(tensor.shape)
            pad_shape[dim] = longest - tensor.shape[dim]
            padded = torch.cat([tensor, tensor.new_zeros(pad_shape)], dim=dim)
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous(), group=group)
        return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes, strict=True)], dim=dim)

    @staticmethod
    def backward(ctx, grad):
        return grad.narrow(ctx.dim, ctx.start, ctx.length), None, None, None


def sum_gradients(module: torch.nn.Module, group: dist.ProcessGroup | None) -> None:
    """Sum parameter gradients over the sequence-parallel group (the full gradient).

    Every trainable parameter takes part, with a zero gradient if it has none, so all
    ranks run the same collectives whatever their graphs touched. (With FSDP over a
    dp x sp mesh, which averages over all ranks, scale the loss by sp instead.)
    """
    if group_size(group) == 1:
        return
    for param in module.parameters():
        if not param.requires_grad:
            continue
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad, group=group)
