"""The disk store and memory layer: exact round trip, corruption detected, atomic writes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from longrl.vision.cache import EmbeddingCache, Expected
from longrl.vision.memory import ByteLRU
from longrl.vision.store import CacheEntry, ClipInfo, CorruptEntryError, DiskStore

REPO = Path(__file__).resolve().parents[2]
CLIP = ClipInfo(num_frames=4, height=56, width=84, fps=0.75)
GRID = (2, 4, 6)  # tokens = 2*4*6/4 = 12


def make_entry(seed: int = 0, dtype=torch.float32, key="e" * 64, clip_key="c" * 64, rows=12):
    generator = torch.Generator().manual_seed(seed)
    return CacheEntry(
        key=key,
        clip_key=clip_key,
        clip=CLIP,
        grid_thw=GRID,
        second_per_grid_t=2 / CLIP.fps,
        embeds=torch.randn(rows, 16, generator=generator).to(dtype),
        timestamps=torch.tensor([0.0, 1.0, 2.5, 4.0], dtype=torch.float64),
        frame_indices=torch.tensor([0, 30, 75, 120]),
        source="videos/a.mp4",
    )


def expected_for(entry: CacheEntry, **changes) -> Expected:
    fields = dict(
        key=entry.key,
        clip_key=entry.clip_key,
        clip=CLIP,
        grid_thw=GRID,
        second_per_grid_t=2 / CLIP.fps,
        hidden=16,
        dtype=entry.embeds.dtype,
        merge_size=2,
    )
    fields.update(changes)
    return Expected(**fields)


def _same(a: CacheEntry, b: CacheEntry) -> bool:
    return (
        a.key == b.key
        and a.clip == b.clip
        and a.grid_thw == b.grid_thw
        and a.second_per_grid_t == b.second_per_grid_t
        and a.embeds.dtype == b.embeds.dtype
        and torch.equal(a.embeds, b.embeds)
        and torch.equal(a.timestamps, b.timestamps)
        and torch.equal(a.frame_indices, b.frame_indices)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_is_bit_exact_and_the_header_describes_the_frames(tmp_path, dtype):
    store = DiskStore(tmp_path)
    entry = make_entry(dtype=dtype)
    path = store.write(entry)
    assert path == tmp_path / "v1" / "cc" / ("c" * 64) / ("e" * 64 + ".safetensors")
    back = store.read(entry.clip_key, entry.key)
    assert _same(back, entry) and back.source == "videos/a.mp4"
    assert store.exists(entry.clip_key, entry.key)
    assert store.probe_clip(entry.clip_key) == CLIP  # header only, no decode
    assert store.read(entry.clip_key, "f" * 64) is None
    assert store.probe_clip("d" * 64) is None
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def _corrupt_variants(path: Path) -> dict[str, bytes]:
    data = path.read_bytes()
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF  # inside the tensor bytes: only the checksum can tell
    return {
        "truncated": data[: len(data) - 7],
        "bit flip": bytes(flipped),
        "garbage": b"not a safetensors file at all",
        "empty": b"",
    }


def test_corrupt_files_are_detected_warned_and_replaced(tmp_path, caplog):
    store = DiskStore(tmp_path)
    entry = make_entry()
    path = store.write(entry)
    cache = EmbeddingCache(tmp_path, memory_bytes=0)
    for name, data in _corrupt_variants(path).items():
        path.write_bytes(data)
        with pytest.raises(CorruptEntryError):
            store.read(entry.clip_key, entry.key)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="longrl.vision"):
            assert cache.get(expected_for(entry)) is None, name
        assert "corrupt entry" in caplog.text and str(path) in caplog.text, name
        cache.put(entry)  # what the encoder does after re-encoding
        assert _same(store.read(entry.clip_key, entry.key), entry), name
    assert cache.stats["corrupt"] == 4


def test_memory_layer_serves_without_touching_the_disk(tmp_path):
    cache = EmbeddingCache(tmp_path, memory_bytes=1 << 20)
    entry = make_entry()
    cache.put(entry)
    cache.store.path(entry.clip_key, entry.key).unlink()
    assert _same(cache.get(expected_for(entry)), entry)
    assert cache.stats["hits_memory"] == 1


def test_take_stats_reports_the_events_since_the_last_call(tmp_path):
    cache = EmbeddingCache(tmp_path, memory_bytes=0)  # no memory layer: every hit reads disk
    entry = make_entry()
    assert cache.get(expected_for(entry)) is None
    cache.put(entry)
    assert _same(cache.get(expected_for(entry)), entry)
    first = cache.take_stats()
    assert first["vision/cache_misses"] == 1 and first["vision/cache_written"] == 1
    assert first["vision/cache_hits_disk"] == 1 and first["vision/cache_hits_memory"] == 0
    assert cache.get(expected_for(entry)) is not None
    second = cache.take_stats()
    assert second["vision/cache_hits_disk"] == 1
    assert second["vision/cache_misses"] == second["vision/cache_written"] == 0
    assert set(second.values()) <= {0.0, 1.0} and cache.take_stats()["vision/cache_hits_disk"] == 0


def test_byte_lru_keeps_recent_entries_within_the_budget():
    lru = ByteLRU(100, size_of=len)
    lru.put("a", "x" * 40)
    lru.put("b", "y" * 40)
    assert lru.get("a") == "x" * 40  # a is now the most recent
    lru.put("c", "z" * 40)  # 120 > 100: evicts the least recent, b
    assert "b" not in lru and "a" in lru and "c" in lru and lru.used_bytes == 80
    lru.put("huge", "h" * 101)  # larger than the budget: not kept, nothing evicted
    assert "huge" not in lru and len(lru) == 2
    lru.put("a", "x" * 10)  # replacing updates the size
    assert lru.used_bytes == 50
    off = ByteLRU(0, size_of=len)
    off.put("a", "x")
    assert off.get("a") is None


# --- atomicity: writers killed with SIGKILL, concurrent writers ---------------------

_WRITER = r"""
import os, sys, time
sys.path.insert(0, {repo!r})
from tests.unit.test_cache_store import make_entry
from longrl.vision import store as store_module

mode, root, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = store_module.DiskStore(root)
if mode == "stall_before_rename":  # the whole temp file is written, then stall
    def stall(fd):
        print("ready", flush=True)
        time.sleep(600)
    os.fsync = stall
    store.write(make_entry(seed))
elif mode == "stall_mid_write":  # half of the bytes are in the temp file, then stall
    import safetensors.torch as st
    def half(tensors, filename, metadata=None):
        data = st.save(tensors, metadata=metadata)
        with open(filename, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
        print("ready", flush=True)
        time.sleep(600)
    st.save_file = half
    store.write(make_entry(seed))
else:  # "loop": rewrite the entry forever, alternating two payloads
    print("ready", flush=True)
    while True:
        for s in (seed, seed + 1):
            store.write(make_entry(s))
"""


def _start_writer(tmp_path: Path, mode: str, seed: int) -> subprocess.Popen:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(repo=str(REPO)))
    return subprocess.Popen(
        [sys.executable, str(script), mode, str(tmp_path / "cache"), str(seed)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _wait_ready(process: subprocess.Popen) -> None:
    line = process.stdout.readline()
    assert line.strip() == "ready", f"writer did not start: {line!r} (exit {process.poll()})"


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def test_writers_killed_mid_write_leave_no_readable_partial_entry(tmp_path):
    store = DiskStore(tmp_path / "cache")
    old = make_entry(seed=7)
    store.write(old)
    other = make_entry(seed=8, key="f" * 64)
    writers = {
        # Replacing an existing entry: the old one must stay readable as it was.
        "stall_before_rename": _start_writer(tmp_path, "stall_before_rename", 1),
        "stall_mid_write": _start_writer(tmp_path, "stall_mid_write", 2),
    }
    loop = _start_writer(tmp_path, "loop", 10)
    try:
        for process in [*writers.values(), loop]:
            _wait_ready(process)
        for process in writers.values():
            _kill(process)
        # Two writers replace the same entry concurrently (the child in a loop, this
        # process between its reads); every read is one of their complete entries.
        payloads = [make_entry(s) for s in (10, 11, 20, 7)]
        reads = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            entry = store.read(old.clip_key, old.key)  # raises if ever partial/corrupt
            assert any(_same(entry, p) for p in payloads)
            reads += 1
            if reads % 5 == 0:
                store.write(payloads[2])
        _kill(loop)  # killed at an arbitrary point of a write
    finally:
        for process in [*writers.values(), loop]:
            if process.poll() is None:
                process.kill()
    assert reads > 10
    final = store.read(old.clip_key, old.key)
    assert any(_same(final, p) for p in payloads)
    # The killed writers' temp files are in the directory, never taken for entries.
    directory = store.clip_dir(old.clip_key)
    temps = [p for p in directory.iterdir() if p.name.startswith(".")]
    assert len(temps) >= 2
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) == [
        f"{old.key}.safetensors"
    ]
    assert store.read(other.clip_key, other.key) is None
    assert store.remove_stale_temp_files(older_than_s=3600) == 0  # fresh ones are kept
    assert store.remove_stale_temp_files(older_than_s=-1) == len(temps)
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]
