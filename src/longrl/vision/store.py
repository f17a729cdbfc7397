"""The on-disk embedding store: one safetensors file per entry key, written atomically.

Layout under `data.cache_dir`:

    v1/<clip_key[:2]>/<clip_key>/<entry_key>.safetensors

A file holds the tensors `embeds` [tokens, hidden] (the ViT output dtype, bit
exact), `timestamps` [T] float64 and `frame_indices` [T] int64, and in its header
metadata: the keys, the frames (count, size, sampled fps), the grid,
second_per_grid_t, the source path (informational) and a SHA-256 checksum of the
tensors. All entries of one clip share its directory, so the frames a clip key
stands for can be read from any entry's header without decoding the video.

Writes go to a temporary file in the same directory (a dot name no reader
opens), are fsynced, then renamed over the final name with `os.replace`, and the
directory is fsynced: a reader sees the old file, the new file, or none, never a
partial one, even with concurrent writers or a writer killed at any point.
A file that fails to load or whose checksum disagrees raises `CorruptEntryError`;
the cache turns that into a warning and a re-encode.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import torch

FORMAT = "longrl-video-embeds/1"
LAYOUT_DIR = "v1"
SUFFIX = ".safetensors"
TEMP_SUFFIX = ".tmp"


class CorruptEntryError(Exception):
    """An entry file that cannot be trusted (load error, bad header, checksum mismatch)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class ClipInfo:
    """The frames a clip key stands for; independent of preprocessing and model."""

    num_frames: int
    height: int  # decoded frame size (upright)
    width: int
    fps: float  # sampled rate, frames / duration: sets second_per_grid_ts


@dataclass(frozen=True)
class CacheEntry:
    key: str
    clip_key: str
    clip: ClipInfo
    grid_thw: tuple[int, int, int]
    second_per_grid_t: float
    embeds: torch.Tensor  # [tokens, hidden]
    timestamps: torch.Tensor  # [T] float64, seconds
    frame_indices: torch.Tensor  # [T] int64, positions in decode order
    source: str = ""

    @property
    def nbytes(self) -> int:
        tensors = (self.embeds, self.timestamps, self.frame_indices)
        return sum(t.numel() * t.element_size() for t in tensors)


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        flat = tensors[name].detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensors[name].shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def _entry_tensors(entry: CacheEntry) -> dict[str, torch.Tensor]:
    return {
        "embeds": entry.embeds.detach().to("cpu").contiguous(),
        "timestamps": entry.timestamps.to("cpu", torch.float64).contiguous(),
        "frame_indices": entry.frame_indices.to("cpu", torch.int64).contiguous(),
    }


def _metadata(entry: CacheEntry, tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    clip = entry.clip
    return {
        "format": FORMAT,
        "key": entry.key,
        "clip_key": entry.clip_key,
        "num_frames": str(clip.num_frames),
        "height": str(clip.height),
        "width": str(clip.width),
        "fps": float(clip.fps).hex(),  # exact: second_per_grid_ts must match bit for bit
        "grid_thw": ",".join(str(v) for v in entry.grid_thw),
        "second_per_grid_t": float(entry.second_per_grid_t).hex(),
        "source": entry.source,
        "checksum": tensors_checksum(tensors),
    }


def _clip_info(meta: dict[str, str]) -> ClipInfo:
    return ClipInfo(
        num_frames=int(meta["num_frames"]),
        height=int(meta["height"]),
        width=int(meta["width"]),
        fps=float.fromhex(meta["fps"]),
    )


# A header larger than this is not ours (ours are a few hundred bytes).
_MAX_HEADER_BYTES = 1 << 20


def _header_metadata(path: Path, header: bytes) -> dict[str, str]:
    try:
        meta = json.loads(header).get("__metadata__") or {}
    except (ValueError, AttributeError) as err:
        raise CorruptEntryError(path, f"header is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CorruptEntryError(path, f"header metadata is not a {FORMAT} entry")
    return meta


def _header_length(path: Path, prefix: bytes) -> int:
    if len(prefix) < 8:
        raise CorruptEntryError(path, f"{len(prefix)} bytes: too short for a safetensors file")
    length = int.from_bytes(prefix[:8], "little")
    if length > _MAX_HEADER_BYTES:
        raise CorruptEntryError(path, f"header length {length} is not plausible")
    return length


def _read_metadata(path: Path) -> dict[str, str]:
    """The header metadata only (a few hundred bytes read)."""
    with open(path, "rb") as handle:
        length = _header_length(path, handle.read(8))
        header = handle.read(length)
    if len(header) != length:
        raise CorruptEntryError(path, "file ends inside the header")
    return _header_metadata(path, header)


class DiskStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def clip_dir(self, clip_key: str) -> Path:
        return self.root / LAYOUT_DIR / clip_key[:2] / clip_key

    def path(self, clip_key: str, key: str) -> Path:
        return self.clip_dir(clip_key) / f"{key}{SUFFIX}"

    def write(self, entry: CacheEntry) -> Path:
        """Atomically create or replace the entry's file; returns its path."""
        from safetensors.torch import save_file

        path = self.path(entry.clip_key, entry.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = _entry_tensors(entry)
        metadata = _metadata(entry, tensors)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            save_file(tensors, str(temp), metadata=metadata)
            _fsync_path(temp)
            os.replace(temp, path)
        except BaseException:
            with suppress(FileNotFoundError):
                temp.unlink()
            raise
        _fsync_path(path.parent)
        return path

    def read(self, clip_key: str, key: str) -> CacheEntry | None:
        """The entry, None when absent; CorruptEntryError when the file cannot be trusted."""
        from safetensors.torch import load

        path = self.path(clip_key, key)
        # One read of one open file: header and tensors cannot come from two versions of
        # the entry (safetensors' safe_open reopens the file by name for torch tensors).
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        length = _header_length(path, data)
        meta = _header_metadata(path, data[8 : 8 + length])
        try:
            tensors = load(data)
        except Exception as err:  # safetensors raises its own error types for a bad file
            raise CorruptEntryError(path, f"tensors do not load ({err})") from None
        missing = {"embeds", "timestamps", "frame_indices"} - set(tensors)
        if missing:
            raise CorruptEntryError(path, f"tensors {sorted(missing)} missing")
        if meta.get("checksum") != tensors_checksum(tensors):
            raise CorruptEntryError(path, "checksum of the tensors does not match the header")
        try:
            grid = tuple(int(v) for v in meta["grid_thw"].split(","))
            if len(grid) != 3:
                raise ValueError(f"grid_thw {meta['grid_thw']!r}")
            return CacheEntry(
                key=meta["key"],
                clip_key=meta["clip_key"],
                clip=_clip_info(meta),
                grid_thw=grid,
                second_per_grid_t=float.fromhex(meta["second_per_grid_t"]),
                embeds=tensors["embeds"],
                timestamps=tensors["timestamps"],
                frame_indices=tensors["frame_indices"],
                source=meta.get("source", ""),
            )
        except (KeyError, ValueError) as err:
            raise CorruptEntryError(path, f"header field missing or malformed ({err})") from None

    def exists(self, clip_key: str, key: str) -> bool:
        """A file with a well-formed header for this key is there (tensors not checked)."""
        try:
            meta = _read_metadata(self.path(clip_key, key))
        except (FileNotFoundError, CorruptEntryError):
            return False
        return meta.get("key") == key and meta.get("clip_key") == clip_key

    def probe_clip(self, clip_key: str) -> ClipInfo | None:
        """The frames of a clip key as recorded by any entry of it, read from a header only."""
        directory = self.clip_dir(clip_key)
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return None
        for name in names:
            if name.startswith(".") or not name.endswith(SUFFIX):
                continue
            try:
                meta = _read_metadata(directory / name)
                if meta.get("clip_key") == clip_key:
                    return _clip_info(meta)
            except (FileNotFoundError, CorruptEntryError, KeyError, ValueError):
                continue  # a bad file is reported (and replaced) when its entry is read
        return None

    def entry_bytes(self, clip_key: str, key: str) -> int:
        try:
            return self.path(clip_key, key).stat().st_size
        except FileNotFoundError:
            return 0

    def remove_stale_temp_files(self, older_than_s: float) -> int:
        """Delete temp files left by killed writers (older than `older_than_s`); their count."""
        removed, cutoff = 0, time.time() - older_than_s
        for temp in (self.root / LAYOUT_DIR).glob(f"*/*/.*{TEMP_SUFFIX}"):
            with suppress(FileNotFoundError):
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
                    removed += 1
        return removed


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
