"""Deterministic, resumable order of training prompts.

Epoch e visits the records in a permutation seeded by (seed, e); the position
(epoch, index) is saved in checkpoints, so a resumed run draws exactly the
prompts the uninterrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


class PromptOrder(Generic[T]):
    def __init__(self, items: Sequence[T], *, seed: int, shuffle: bool = True) -> None:
        if not items:
            raise ValueError("no training samples to draw from (all records skipped or empty file)")
        self.items = items
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.index = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.items)))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.items), generator=generator).tolist()

    def next(self) -> T:
        if self.index >= len(self._order):
            self.epoch += 1
            self.index = 0
            self._order = self._permutation(self.epoch)
        item = self.items[self._order[self.index]]
        self.index += 1
        return item

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "index": self.index,
            "seed": self.seed,
            "size": len(self.items),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["size"] != len(self.items) or state["seed"] != self.seed:
            raise ValueError(
                f"checkpoint data position is for {state['size']} samples with seed "
                f"{state['seed']}, but this run has {len(self.items)} with seed {self.seed}: "
                "resume with the same dataset and data.seed"
            )
        self.epoch, self.index = state["epoch"], state["index"]
        self._order = self._permutation(self.epoch)
