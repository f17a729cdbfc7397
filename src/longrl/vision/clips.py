"""Videos of a sample named by their clip key, decoded only when the cache lacks them.

With `data.cache_dir` set, `keyed_clips` replaces plain decoding: each video is
hashed, its clip key formed, and if any entry of that clip is on disk its frames
(count, size, sampled fps) are read from that entry's header: the video is known
to decode to exactly these frames, so it is not decoded at all. The prompt needs
only the grid and second_per_grid_ts, which follow from those numbers. Otherwise
the video is decoded as usual (errors are the usual `VideoError`/`SamplingError`,
so undecodable samples are skipped and counted exactly as without the cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from longrl.config.data import DataConfig
from longrl.data.sample import Sample
from longrl.vision.errors import EmbeddingCacheError
from longrl.vision.keys import SamplingSettings, clip_key, content_hash, effective_sampling
from longrl.vision.store import ClipInfo, DiskStore


@dataclass(frozen=True)
class KeyedClip:
    """One video of a sample: where it is, which frames, and (if decoded) the frames."""

    path: str
    sampling: SamplingSettings
    clip_key: str
    info: ClipInfo
    frames: Any = None  # uint8 [T, H, W, 3]; None when known from the cache only
    timestamps: tuple[float, ...] = ()
    indices: tuple[int, ...] = ()

    @property
    def decoded(self) -> bool:
        return self.frames is not None

    def with_frames(self) -> KeyedClip:
        """This clip with its frames, decoding now if needed (for a cache miss)."""
        if self.decoded:
            return self
        fresh = decode_keyed(self.path, self.sampling, self.clip_key)
        if fresh.info != self.info:
            raise EmbeddingCacheError(
                f"{self.path}: the embedding cache records its frames as {self.info} but "
                f"decoding gives {fresh.info}; the cache directory {self.clip_key[:2]}/"
                f"{self.clip_key} is inconsistent: delete it"
            )
        return fresh


def decode_keyed(path: str, sampling: SamplingSettings, key: str) -> KeyedClip:
    from longrl.models.inputs import VideoClip
    from longrl.video.decode import read_frames

    decoded = read_frames(path, **sampling.read_frames_kwargs())
    frames = decoded.frames
    info = ClipInfo(
        num_frames=int(frames.shape[0]),
        height=int(frames.shape[1]),
        width=int(frames.shape[2]),
        fps=float(VideoClip.from_decoded(decoded).fps),  # the rate the uncached path uses
    )
    return KeyedClip(
        path=str(path),
        sampling=sampling,
        clip_key=key,
        info=info,
        frames=frames,
        timestamps=tuple(float(t) for t in decoded.timestamps),
        indices=tuple(int(i) for i in decoded.indices),
    )


def clip_key_of(path: str, sampling: SamplingSettings) -> str:
    """The clip key of a video file; `VideoError` when the file cannot be read."""
    from longrl.video.errors import VideoError

    try:
        return clip_key(content_hash(path), sampling)
    except FileNotFoundError:
        raise VideoError(path, "no such file", "check the path") from None
    except OSError as err:
        raise VideoError(path, f"cannot be read ({err.strerror or err})") from None


def keyed_clips(sample: Sample, data: DataConfig) -> list[KeyedClip]:
    """The sample's videos: from the cache's frame record when present, else decoded."""
    if data.cache_dir is None:
        raise EmbeddingCacheError("keyed_clips needs data.cache_dir")
    store = DiskStore(data.cache_dir)
    sampling = effective_sampling(sample, data)
    clips = []
    for path in sample.videos:
        key = clip_key_of(path, sampling)
        info = store.probe_clip(key)
        if info is None:
            clips.append(decode_keyed(path, sampling, key))
        else:
            clips.append(KeyedClip(path=str(path), sampling=sampling, clip_key=key, info=info))
    return clips
