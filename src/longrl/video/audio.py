"""The audio track of a video (or audio) file as mono float32 samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from longrl.video.errors import VideoError
from longrl.video.libav_log import capture_libav_errors, libav_errors_in
from longrl.video.opening import open_media

DEFAULT_SAMPLE_RATE = 16000  # what speech encoders (Whisper and kin) take


def read_audio(path: str | Path, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """The first audio stream, resampled to `sample_rate` Hz and mixed down to mono.

    Returns float32 samples in [-1, 1], shape [N], from the stream's first
    sample (not padded to where the video starts). `VideoError` when the file
    has no audio stream, or the audio cannot be decoded whole.
    """
    import av

    if sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate} must be positive")
    chunks: list[np.ndarray] = []
    with capture_libav_errors() as libav_log, open_media(path) as container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoError(
                path,
                f"has no audio stream (streams: {', '.join(kinds)})",
                "use a file with sound, or skip audio for this sample",
            )
        stream = container.streams.audio[0]
        stream.thread_type = "NONE"  # keep FFmpeg's messages on this thread
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(stream):
                chunks.extend(_samples(resampler.resample(frame)))
            chunks.extend(_samples(resampler.resample(None)))  # flush the resampler
        except Exception as error:  # av raises many types; all mean the same here
            raise VideoError(path, f"decoding the audio failed: {error}") from error
        damage = libav_errors_in(libav_log)
    if damage:
        raise VideoError(path, f"the audio is damaged (FFmpeg: {damage})")
    if not chunks:
        return np.zeros(0, np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _samples(frames) -> list[np.ndarray]:
    # Packed mono float: to_ndarray gives shape (1, samples).
    return [frame.to_ndarray().reshape(-1) for frame in frames]
