"""DAPO dynamic sampling: drop groups that teach nothing, top the batch up.

A group whose rewards are all equal has zero advantage under every
group-relative estimator, so it costs compute and gives no gradient.
`keep_groups_with_variance` decides which groups stay. It is a pure function
of the rewards, so when every rank passes the same gathered rewards every rank
keeps the same groups and takes the same branch (no per-rank decision before
a collective).

`GroupBatchAccumulator` collects kept groups over several generation rounds
until the batch is full, with a bounded number of rounds.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Generic, Literal, TypeVar

import torch

from longrl.algos.groups import flatten_rewards

T = TypeVar("T")


def keep_groups_with_variance(
    rewards: torch.Tensor | Sequence[float],
    group_ids: Any | None,
    *,
    valid: torch.Tensor | Sequence[bool] | None = None,
    atol: float = 0.0,
) -> list[Hashable]:
    """Ids of groups (first-appearance order) with >= 2 valid rewards that differ.

    "Differ" means max - min > atol over the group's valid samples. Groups of one
    sample, or with fewer than two scored samples, are dropped: they have no
    baseline and get zero advantage. With rewards [G, n] and group_ids=None the
    ids are the row numbers 0..G-1.
    """
    values, index, unique = flatten_rewards(rewards, group_ids)
    ok = (
        torch.ones(values.numel(), dtype=torch.bool)
        if valid is None
        else torch.as_tensor(valid, dtype=torch.bool).reshape(-1)
    )
    if ok.numel() != values.numel():
        raise ValueError(f"valid has {ok.numel()} entries but rewards has {values.numel()}")
    kept = []
    for g, gid in enumerate(unique):
        scored = values[(index == g) & ok]
        if scored.numel() >= 2 and float(scored.max() - scored.min()) > atol:
            kept.append(gid)
    return kept


class DynamicSamplingExhausted(RuntimeError):
    """Raised when max_tries rounds did not yield enough groups with reward variance."""


class GroupBatchAccumulator(Generic[T]):
    """Pure state machine: collect kept groups until `target_groups` are in hand.

        acc = GroupBatchAccumulator(target_groups=8, max_tries=4)
        while not acc.add(kept_groups_of_this_round):
            ...generate another round...
        batch = acc.take()

    Each `add` is one try (one generation round). `add` returns True when the
    batch is ready: full, or out of tries with on_exhausted="partial". Out of
    tries with on_exhausted="raise" (default), `add` raises
    DynamicSamplingExhausted. `max_tries=None` means unlimited. `take` returns at
    most `target_groups` groups in arrival order (the excess of the last round
    is dropped and counted in `dropped`, as DAPO truncates) and resets the tries.
    """

    def __init__(
        self,
        target_groups: int,
        max_tries: int | None = None,
        on_exhausted: Literal["raise", "partial"] = "raise",
    ) -> None:
        if target_groups <= 0:
            raise ValueError(f"target_groups must be > 0, got {target_groups}")
        if max_tries is not None and max_tries <= 0:
            raise ValueError(f"max_tries must be > 0 or None (unlimited), got {max_tries}")
        if on_exhausted not in ("raise", "partial"):
            raise ValueError(f"on_exhausted must be 'raise' or 'partial', got {on_exhausted!r}")
        self.target_groups = target_groups
        self.max_tries = max_tries
        self.on_exhausted = on_exhausted
        self.tries = 0
        self.dropped = 0
        self._groups: list[T] = []

    @property
    def groups(self) -> tuple[T, ...]:
        return tuple(self._groups)

    @property
    def full(self) -> bool:
        return len(self._groups) >= self.target_groups

    @property
    def exhausted(self) -> bool:
        return self.max_tries is not None and self.tries >= self.max_tries

    @property
    def ready(self) -> bool:
        return self.full or (self.exhausted and self.on_exhausted == "partial")

    def add(self, groups: Sequence[T]) -> bool:
        """Record one round's kept groups; True when the batch is ready to `take`."""
        if self.ready:
            raise RuntimeError("batch is already ready: call take() before adding more groups")
        self.tries += 1
        self._groups.extend(groups)
        if not self.full and self.exhausted and self.on_exhausted == "raise":
            raise DynamicSamplingExhausted(
                f"dynamic sampling kept {len(self._groups)} of {self.target_groups} groups "
                f"after {self.tries} rounds (max_tries); most groups have equal rewards. "
                "Raise algorithm.max_filter_tries, use easier/harder-balanced data, "
                "or accept partial batches (on_exhausted='partial')"
            )
        return self.ready

    def take(self) -> list[T]:
        """The batch (at most target_groups groups); resets the accumulator."""
        if not self.ready:
            raise RuntimeError(
                f"batch not ready: {len(self._groups)} of {self.target_groups} groups "
                f"after {self.tries} tries"
            )
        batch = self._groups[: self.target_groups]
        self.dropped += len(self._groups) - len(batch)
        self._groups = []
        self.tries = 0
        return batch
