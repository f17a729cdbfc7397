"""Where each token lives under sequence parallelism, and the attention masks that follow.

Two kinds of forward call:

- sharded (prefill, training, any call with gradients): the new tokens are padded
  on the LEFT to a multiple of sp and split into sp contiguous chunks, chunk r on
  rank r. Left padding keeps the last real token last (prompts are left-padded
  already); SP pad tokens are masked out of every attention, so results do not change.
- replicated (decode steps: no gradients and fewer new tokens than ranks): every
  rank runs the same few tokens whole, attends over the keys it holds, and the
  ranks combine their partial softmaxes (see `ulysses`). No pads.

Key order. The model updates its KV cache *before* calling the attention function,
so each rank's cache holds, per past call, its chunk (sharded call) or the whole
call (replicated call; only rank REPLICATED_OWNER's copy counts, the others are
masked), all kv heads. In a sharded call the all-to-all yields keys ordered
[rank 0's stored keys, rank 1's, ...], which is not sequence order. Attention does
not depend on the order of its keys as long as the mask follows them, so masks
are built from each key's *logical index*: its column in the caller's 2-D
attention mask (past tokens + this call), or -1 for a pad or an ignored copy.

All functions here are pure; every rank builds the same sharded-call mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longrl.parallel.errors import ParallelConfigError

# The rank whose copy of a replicated call's keys/values attention uses.
REPLICATED_OWNER = 0


def padded_width(width: int, sp: int) -> int:
    return -(-width // sp) * sp


@dataclass(frozen=True)
class Call:
    width: int  # the caller's new tokens
    replicated: bool = False


@dataclass(frozen=True)
class SequenceLayout:
    """The forward calls whose keys/values a rank's cache holds, oldest first."""

    sp: int
    calls: tuple[Call, ...] = ()

    def appended(self, width: int, replicated: bool = False) -> SequenceLayout:
        return SequenceLayout(self.sp, (*self.calls, Call(width, replicated)))

    @property
    def logical_length(self) -> int:
        """Caller tokens so far: the width of the caller's 2-D attention mask."""
        return sum(call.width for call in self.calls)

    @property
    def local_length(self) -> int:
        """Positions stored per rank (what each rank's cache reports as its length)."""
        return sum(self._stored(call) for call in self.calls)

    def _stored(self, call: Call) -> int:
        return call.width if call.replicated else padded_width(call.width, self.sp) // self.sp


def call_positions(width: int, sp: int, base: int, device=None) -> torch.Tensor:
    """Logical index of each padded column of a sharded call: base.. for tokens, -1 for pads."""
    pad = padded_width(width, sp) - width
    columns = torch.arange(pad + width, device=device)
    return torch.where(columns >= pad, base + columns - pad, -1)


def local_key_positions(layout: SequenceLayout, rank: int, device=None) -> torch.Tensor:
    """Logical indices of the keys `rank` stores (its cache, oldest call first)."""
    pieces, base = [], 0
    for call in layout.calls:
        if call.replicated:
            positions = base + torch.arange(call.width, device=device)
            if rank != REPLICATED_OWNER:
                positions = torch.full_like(positions, -1)
        else:
            positions = call_positions(call.width, layout.sp, base, device)
            positions = positions.view(layout.sp, -1)[rank]
        pieces.append(positions)
        base += call.width
    return torch.cat(pieces)


def key_positions(layout: SequenceLayout, device=None) -> torch.Tensor:
    """Logical indices of the keys after a sharded call's all-to-all (rank-major)."""
    return torch.cat([local_key_positions(layout, r, device) for r in range(layout.sp)])


def query_positions(layout: SequenceLayout, device=None) -> torch.Tensor:
    """Logical indices of the last call's queries (padded order for a sharded call)."""
    *past, last = layout.calls
    base = sum(call.width for call in past)
    if last.replicated:
        return base + torch.arange(last.width, device=device)
    return call_positions(last.width, layout.sp, base, device)


def full_attention_mask(layout: SequenceLayout, caller_mask: torch.Tensor) -> torch.Tensor:
    """Boolean [B, 1, queries, keys] mask (True = attend) for a sharded last call.

    `caller_mask` is the caller's 2-D mask over all tokens so far ([B, logical_length],
    1 = real token), as transformers models take it. A query attends to real keys at
    or before its logical index.
    """
    allowed = _allowed(layout, caller_mask, key_positions(layout, caller_mask.device))
    # A pad query (SP pad, or the caller's left padding) can have no key to attend to;
    # softmax over nothing is NaN, and NaN in a masked position's value still poisons
    # real tokens (0 * NaN = NaN). Such rows attend to every key instead: finite, unused.
    return allowed | ~allowed.any(dim=-1, keepdim=True)


def local_attention_mask(
    layout: SequenceLayout, caller_mask: torch.Tensor, rank: int
) -> torch.Tensor:
    """Boolean [B, 1, queries, local keys] mask for a replicated last call on `rank`.

    Rows may be empty here (this rank holds no visible key); the cross-rank softmax
    gives such a rank zero weight, so they are left empty.
    """
    return _allowed(layout, caller_mask, local_key_positions(layout, rank, caller_mask.device))


def _allowed(layout: SequenceLayout, caller_mask: torch.Tensor, keys: torch.Tensor):
    if caller_mask.dim() != 2 or caller_mask.shape[1] != layout.logical_length:
        raise ParallelConfigError(
            f"attention_mask has shape {tuple(caller_mask.shape)}; expected "
            f"[batch, {layout.logical_length}] (past tokens + this call's tokens)"
        )
    queries = query_positions(layout, caller_mask.device)
    real_key = caller_mask.bool()[:, keys.clamp(min=0)] & (keys >= 0)
    allowed = real_key[:, None, :] & (keys[None, None, :] <= queries[None, :, None])
    return allowed[:, None]
