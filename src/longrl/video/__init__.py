"""Video input: frame sampling (pure), seek-based PyAV decoding, audio extraction.

    from longrl.video import read_frames
    decoded = read_frames("clip.mp4", num_frames=64)   # or fps=2.0 (the default)
    decoded.frames        # uint8 [T, H, W, 3] RGB, upright
    decoded.timestamps    # seconds of each frame; decoded.indices: positions

Every failure to read a file is a `VideoError` naming the file; an invalid
sampling request is a `SamplingError`. Importing this package does not import
PyAV (only calling the readers does).
"""

from longrl.video.audio import DEFAULT_SAMPLE_RATE, read_audio
from longrl.video.decode import DecodedFrames, VideoInfo, probe_video, read_frames
from longrl.video.errors import VideoError
from longrl.video.sampling import (
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_MIN_FRAMES,
    MAX_FRAMES_LIMIT,
    TEMPORAL_PATCH_SIZE,
    FramePlan,
    SamplingError,
    frame_count,
    plan_frames,
)

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_MIN_FRAMES",
    "DEFAULT_SAMPLE_RATE",
    "MAX_FRAMES_LIMIT",
    "TEMPORAL_PATCH_SIZE",
    "DecodedFrames",
    "FramePlan",
    "SamplingError",
    "VideoError",
    "VideoInfo",
    "frame_count",
    "plan_frames",
    "probe_video",
    "read_audio",
    "read_frames",
]
