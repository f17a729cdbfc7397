"""Fill the embedding cache for a whole dataset (`longrl cache`).

Each distinct (video file, frame request) of the dataset is one task. Tasks are
sorted, so every rank computes the same list, and rank r of w takes tasks
r, r + w, ... An entry already on disk (well-formed header; with `verify`, also
its checksum and shape) is counted as cached and skipped: a killed run resumes
where it stopped, since entries are written atomically. A video that fails to
hash, decode or preprocess is recorded with its reason and the run goes on.
Entries are computed exactly as training computes them on a miss
(`CachedVideoEncoder`), one video per vision-tower call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from longrl.config.data import DataConfig
from longrl.data.sample import Sample
from longrl.vision.cache import EmbeddingCache
from longrl.vision.cached_encoder import CachedVideoEncoder
from longrl.vision.clips import KeyedClip, clip_key_of, decode_keyed
from longrl.vision.keys import SamplingSettings, effective_sampling

logger = logging.getLogger("longrl.vision")

# Temp files of killed writers older than this are removed at the start of a run.
STALE_TEMP_AGE_S = 3600.0


@dataclass(frozen=True)
class VideoTask:
    path: str
    sampling: SamplingSettings


@dataclass
class PrecomputeSummary:
    videos: int = 0  # tasks of this shard
    encoded: int = 0
    cached: int = 0  # already on disk (resume)
    tokens: int = 0  # embedding rows of the entries encoded or found
    bytes: int = 0  # on-disk size of those entries
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (video, reason)

    def merge(self, other: PrecomputeSummary) -> PrecomputeSummary:
        return PrecomputeSummary(
            videos=self.videos + other.videos,
            encoded=self.encoded + other.encoded,
            cached=self.cached + other.cached,
            tokens=self.tokens + other.tokens,
            bytes=self.bytes + other.bytes,
            seconds=max(self.seconds, other.seconds),
            failures=self.failures + other.failures,
        )

    def to_dict(self) -> dict:
        return {
            "videos": self.videos,
            "encoded": self.encoded,
            "cached": self.cached,
            "failed": len(self.failures),
            "tokens": self.tokens,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "failures": [{"video": v, "reason": r} for v, r in self.failures],
        }


def video_tasks(samples: Iterable[Sample], data: DataConfig) -> list[VideoTask]:
    """Each distinct (video, effective frame request) once, in a rank-independent order."""
    tasks = {
        VideoTask(str(path), effective_sampling(sample, data))
        for sample in samples
        for path in sample.videos
    }
    return sorted(tasks, key=lambda t: (t.path, repr(t.sampling)))


def shard(tasks: Sequence[VideoTask], rank: int, world: int) -> list[VideoTask]:
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    return list(tasks[rank::world])


def precompute(
    encoder: CachedVideoEncoder,
    tasks: Sequence[VideoTask],
    *,
    verify: bool = False,
    progress: bool = True,
) -> PrecomputeSummary:
    """Encode and store every task not yet cached; returns what was done."""
    from tqdm import tqdm

    from longrl.models.preprocess import PreprocessError
    from longrl.models.rope import ModelInputError
    from longrl.video.errors import VideoError
    from longrl.video.sampling import SamplingError

    cache: EmbeddingCache = encoder.cache
    removed = cache.store.remove_stale_temp_files(STALE_TEMP_AGE_S)
    if removed:
        logger.info("removed %d temp files left by killed writers", removed)
    summary = PrecomputeSummary(videos=len(tasks))
    start = time.perf_counter()
    bar = tqdm(tasks, desc="cache", unit="video", disable=not progress, dynamic_ncols=True)
    for task in bar:
        try:
            key = clip_key_of(task.path, task.sampling)
            entry_key, tokens = _cached_entry(encoder, key, verify)
            if entry_key is None:
                clip = decode_keyed(task.path, task.sampling, key)
                entry_key, tokens = _encode_one(encoder, clip)
                summary.encoded += 1
            else:
                summary.cached += 1
        except (VideoError, SamplingError, ModelInputError, PreprocessError) as err:
            summary.failures.append((task.path, f"{type(err).__name__}: {err}"))
            logger.warning("cannot cache %s: %s", task.path, err)
            continue
        summary.tokens += tokens
        summary.bytes += cache.store.entry_bytes(key, entry_key)
        bar.set_postfix(encoded=summary.encoded, cached=summary.cached, refresh=False)
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _cached_entry(
    encoder: CachedVideoEncoder, clip_key: str, verify: bool
) -> tuple[str | None, int]:
    """(entry key, tokens) of an entry already stored for this clip, else (None, 0)."""
    store = encoder.cache.store
    info = store.probe_clip(clip_key)
    if info is None:
        return None, 0
    want = encoder.expected_for(clip_key, info)
    if verify:
        entry = encoder.cache.get(want)  # full read: checksum, shape, dtype; corrupt -> None
        return (want.key, want.tokens) if entry is not None else (None, 0)
    return (want.key, want.tokens) if store.exists(clip_key, want.key) else (None, 0)


def _encode_one(encoder: CachedVideoEncoder, clip: KeyedClip) -> tuple[str, int]:
    model_input = encoder.build([_placeholder_prompt(encoder)], [[clip]], thinking=False)
    with torch.no_grad():
        encoder.embeddings(model_input, [clip])
    want = encoder.expected(clip)
    return want.key, want.tokens


def _placeholder_prompt(encoder: CachedVideoEncoder) -> str:
    """A prompt holding one video block: `embeddings` needs a ModelInput of the video."""
    return f"<|vision_start|>{encoder.processor.video_token}<|vision_end|>"


def combine_summaries(summary: PrecomputeSummary) -> PrecomputeSummary:
    """The whole run's summary on every rank (sums, slowest rank's time, all failures).

    Collectives on the default group, when one is initialised; failures travel as
    JSON bytes (no pickle).
    """
    import json

    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return summary
    counts = torch.tensor(
        [summary.videos, summary.encoded, summary.cached, summary.tokens, summary.bytes],
        dtype=torch.int64,
    )
    dist.all_reduce(counts)
    seconds = torch.tensor([summary.seconds], dtype=torch.float64)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    payload = torch.frombuffer(bytearray(json.dumps(summary.failures).encode()), dtype=torch.uint8)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([payload.numel()], dtype=torch.int64))
    width = max(int(s) for s in sizes)
    padded = torch.zeros(width, dtype=torch.uint8)
    padded[: payload.numel()] = payload
    gathered = [torch.zeros(width, dtype=torch.uint8) for _ in sizes]
    dist.all_gather(gathered, padded)
    failures = [
        (str(video), str(reason))
        for chunk, size in zip(gathered, sizes, strict=True)
        for video, reason in json.loads(bytes(chunk[: int(size)].tolist()).decode())
    ]
    videos, encoded, cached, tokens, nbytes = (int(v) for v in counts.tolist())
    return PrecomputeSummary(
        videos, encoded, cached, tokens, nbytes, float(seconds), sorted(failures)
    )


def format_summary(summary: PrecomputeSummary, cache_dir: str, world: int) -> str:
    per_video = summary.bytes / max(1, summary.encoded + summary.cached)
    lines = [
        f"embedding cache {cache_dir}" + (f" ({world} ranks)" if world > 1 else ""),
        f"  videos   {summary.videos}: encoded {summary.encoded}, already cached "
        f"{summary.cached}, failed {len(summary.failures)}",
        f"  tokens   {summary.tokens:,}",
        f"  bytes    {summary.bytes:,} ({_human(summary.bytes)}; {_human(per_video)} per video)",
        f"  time     {summary.seconds:.1f} s",
    ]
    if summary.failures:
        lines.append("  failures:")
        lines.extend(f"    {video}: {reason}" for video, reason in summary.failures)
    return "\n".join(lines)


def _human(nbytes: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = 0
    while nbytes >= 1024 and power < len(units) - 1:
        nbytes /= 1024
        power += 1
    return f"{nbytes:.1f} {units[power]}" if power else f"{int(nbytes)} B"
