"""A byte-bounded least-recently-used map: the in-memory layer in front of the disk store."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class ByteLRU(Generic[V]):
    """Keeps the most recently used values whose sizes sum to at most `capacity_bytes`.

    A value larger than the whole budget is not kept (it would evict everything
    for one entry). `capacity_bytes=0` keeps nothing.
    """

    def __init__(self, capacity_bytes: int, size_of: Callable[[V], int]) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self._size_of = size_of
        self._items: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self.used_bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: str, value: V) -> None:
        self.discard(key)
        size = self._size_of(value)
        if size > self.capacity_bytes:
            return
        self._items[key] = (value, size)
        self.used_bytes += size
        while self.used_bytes > self.capacity_bytes:
            _, (_, evicted) = self._items.popitem(last=False)
            self.used_bytes -= evicted

    def discard(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.used_bytes -= item[1]
