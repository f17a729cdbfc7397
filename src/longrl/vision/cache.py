"""The embedding cache: a byte-bounded in-memory LRU in front of the disk store.

Every entry read is validated against what the prompt expects before it is used:
its keys, its frames, its grid (tokens = t*h*w / merge**2), second_per_grid_t,
the embedding's shape [tokens, hidden] and dtype. An entry that does not fit is
refused: `EmbeddingCacheError` (data.cache_on_mismatch=raise, the default) or a
warning and a fresh encode (recompute). A file that does not load or fails its
checksum is corrupt: a warning, and the video is encoded again and the file
replaced. Nothing is ever substituted.

The cache is only valid for a frozen vision tower: `cache_for` refuses a model
whose tower has trainable parameters.
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from longrl.vision.errors import EmbeddingCacheError
from longrl.vision.memory import ByteLRU
from longrl.vision.store import CacheEntry, ClipInfo, CorruptEntryError, DiskStore

logger = logging.getLogger("longrl.vision")

OnMismatch = Literal["raise", "recompute"]


@dataclass(frozen=True)
class Expected:
    """What the entry of one video must hold for the prompt being built."""

    key: str
    clip_key: str
    clip: ClipInfo
    grid_thw: tuple[int, int, int]
    second_per_grid_t: float
    hidden: int
    dtype: torch.dtype
    merge_size: int

    @property
    def tokens(self) -> int:
        t, h, w = self.grid_thw
        return t * h * w // self.merge_size**2


def entry_problems(entry: CacheEntry, expected: Expected) -> list[str]:
    """Every way `entry` differs from what the prompt expects (empty: it fits)."""
    problems = []
    if entry.key != expected.key or entry.clip_key != expected.clip_key:
        problems.append(f"written for key {entry.key[:16]}.. (clip {entry.clip_key[:16]}..)")
    if entry.clip != expected.clip:
        problems.append(f"frames {entry.clip}, expected {expected.clip}")
    if tuple(entry.grid_thw) != tuple(expected.grid_thw):
        problems.append(f"grid {list(entry.grid_thw)}, expected {list(expected.grid_thw)}")
    if entry.second_per_grid_t != expected.second_per_grid_t:
        problems.append(
            f"second_per_grid_t {entry.second_per_grid_t}, expected {expected.second_per_grid_t}"
        )
    shape = tuple(entry.embeds.shape)
    if shape != (expected.tokens, expected.hidden):
        problems.append(
            f"embedding shape {shape}, expected ({expected.tokens}, {expected.hidden}) "
            f"for grid {list(expected.grid_thw)}"
        )
    if entry.embeds.dtype != expected.dtype:
        problems.append(f"dtype {entry.embeds.dtype}, expected {expected.dtype}")
    frames = expected.clip.num_frames
    if entry.timestamps.shape != (frames,) or entry.frame_indices.shape != (frames,):
        problems.append(f"timestamps/frame_indices not of length {frames}")
    return problems


# Events counted per read/write: hits from the in-memory layer or from disk, absent
# entries, corrupt files, entries refused as not fitting the prompt, writes.
CACHE_EVENTS = (
    "hits_memory",
    "hits_disk",
    "misses",
    "corrupt",
    "refused",
    "written",
    "write_errors",
)


class EmbeddingCache:
    def __init__(
        self, root: str | Path, *, memory_bytes: int, on_mismatch: OnMismatch = "raise"
    ) -> None:
        if on_mismatch not in ("raise", "recompute"):
            raise ValueError(f"on_mismatch must be 'raise' or 'recompute', got {on_mismatch!r}")
        self.store = DiskStore(root)
        self.memory: ByteLRU[CacheEntry] = ByteLRU(memory_bytes, lambda e: e.nbytes)
        self.on_mismatch = on_mismatch
        self.stats: Counter = Counter()
        self._reported: Counter = Counter()
        self._write_errors: set[str] = set()

    def take_stats(self) -> dict[str, float]:
        """What happened since the last call, as `vision/cache_<event>` metrics."""
        out = {
            f"vision/cache_{event}": float(self.stats[event] - self._reported[event])
            for event in CACHE_EVENTS
        }
        self._reported = Counter(self.stats)
        return out

    def get(self, expected: Expected) -> CacheEntry | None:
        """The validated entry (memory, then disk), or None: absent, corrupt, or refused."""
        entry = self.memory.get(expected.key)
        where = "memory"
        if entry is None:
            where = "disk"
            try:
                entry = self.store.read(expected.clip_key, expected.key)
            except CorruptEntryError as err:
                logger.warning("embedding cache: corrupt entry %s; encoding the video again", err)
                self.stats["corrupt"] += 1
                return None
            if entry is None:
                self.stats["misses"] += 1
                return None
        problems = entry_problems(entry, expected)
        if problems:
            self.memory.discard(expected.key)
            path = self.store.path(expected.clip_key, expected.key)
            message = f"embedding cache entry {path} does not fit the prompt: {'; '.join(problems)}"
            if self.on_mismatch == "raise":
                raise EmbeddingCacheError(
                    f"{message}. Delete the file (or the cache directory), or set "
                    "data.cache_on_mismatch=recompute to re-encode such entries"
                )
            logger.warning(
                "%s; encoding the video again (data.cache_on_mismatch=recompute)", message
            )
            self.stats["refused"] += 1
            return None
        self.memory.put(expected.key, entry)
        self.stats[f"hits_{where}"] += 1
        return entry

    def put(self, entry: CacheEntry) -> None:
        """Keep in memory and write to disk. A failed write is logged, not fatal: the
        embedding itself is valid, only its reuse is lost."""
        self.memory.put(entry.key, entry)
        try:
            self.store.write(entry)
        except OSError as err:
            self.stats["write_errors"] += 1
            reason = f"{type(err).__name__}: {err}"
            if reason not in self._write_errors:  # once per distinct error, not per video
                self._write_errors.add(reason)
                logger.warning(
                    "embedding cache: cannot write under %s (%s)", self.store.root, reason
                )
            return
        self.stats["written"] += 1


_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def require_frozen(visual: torch.nn.Module | None) -> None:
    if visual is None:
        raise EmbeddingCacheError("data.cache_dir is set but the model has no vision tower")
    if any(p.requires_grad for p in visual.parameters()):
        raise EmbeddingCacheError(
            "data.cache_dir is set but the vision tower is trainable "
            "(freeze_vision_tower=false): cached embeddings would go stale as the ViT "
            "trains. Freeze the tower or unset data.cache_dir"
        )


def cache_for(
    model: torch.nn.Module, root: str | Path, *, memory_bytes: int, on_mismatch: OnMismatch
) -> EmbeddingCache:
    """The cache object of this model and directory: one per process, so its in-memory
    layer lives across steps. Refuses a model whose vision tower trains."""
    require_frozen(getattr(getattr(model, "model", None), "visual", None))
    per_model = _caches.setdefault(model, {})
    settings = (str(Path(root).resolve()), int(memory_bytes), on_mismatch)
    if settings not in per_model:
        per_model[settings] = EmbeddingCache(
            root, memory_bytes=memory_bytes, on_mismatch=on_mismatch
        )
    return per_model[settings]
