"""Write a scene sequence as a small video file with PyAV.

libx264 at qp 0 is lossless in YUV: the only error left is the RGB<->YUV
rounding (measured <= 2 levels per channel on the palette), so colours survive
exactly enough to be told apart, and solid frames cost ~25 bytes each. No
B-frames (decode order = presentation order, pts start at 0) and a keyframe at
least every `GOP_FRAMES` frames, so a seek-based reader decodes at most that
many frames per sampled frame. Output is byte-identical for identical input.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from longrl.data.synth_scenes import PALETTE, TimedScene

CODEC = "libx264"
PIX_FMT = "yuv420p"
GOP_FRAMES = 32
CODEC_OPTIONS = {"qp": "0", "preset": "medium", "x264-params": "bframes=0"}


def video_rate(fps: float) -> Fraction:
    """The exact frame rate written to the container (29.97 -> 30000/1001)."""
    return Fraction(fps).limit_denominator(1001)


def encoder_description() -> dict[str, object]:
    return {"codec": CODEC, "pix_fmt": PIX_FMT, "gop": GOP_FRAMES, "options": CODEC_OPTIONS}


def write_scene_video(
    path: str | Path, scenes: Sequence[TimedScene], num_frames: int, fps: float, size: int
) -> int:
    """Encode `scenes` (which must cover frames 0..num_frames) at `size`x`size`; returns bytes."""
    import av
    import numpy as np

    if size % 2 or size < 16:
        raise ValueError(f"size must be even and >= 16 (4:2:0 video), got {size}")
    if not scenes or scenes[0].start_frame != 0 or scenes[-1].end_frame != num_frames:
        raise ValueError("scenes must cover the whole video")
    rate = video_rate(fps)
    path = Path(path)
    # One YUV frame per colour, converted once and re-stamped: the RGB->YUV
    # conversion is the slow part and identical for every frame of a scene.
    colour_frames = {}
    for color in {scene.color for scene in scenes}:
        rgb = np.empty((size, size, 3), dtype=np.uint8)
        rgb[:] = PALETTE[color]
        colour_frames[color] = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            format=PIX_FMT
        )
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(CODEC, rate=rate, options=dict(CODEC_OPTIONS))
        stream.width = size
        stream.height = size
        stream.pix_fmt = PIX_FMT
        stream.time_base = 1 / rate
        stream.codec_context.gop_size = GOP_FRAMES
        # One thread per video: callers parallelise across videos instead.
        stream.codec_context.thread_count = 1
        for scene in scenes:
            frame = colour_frames[scene.color]
            for index in range(scene.start_frame, scene.end_frame):
                frame.pts = index
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path.stat().st_size
