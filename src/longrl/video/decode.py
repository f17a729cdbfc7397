"""Probe a video and decode only the sampled frames, upright, as RGB uint8.

How `read_frames` avoids decoding a whole long video:

1. `scan_timeline` demuxes the packets (reads the file, decodes nothing) for
   every frame's real timestamp and the keyframes, and rejects truncated or
   damaged files; `plan_frames` picks the frames.
2. `TargetDecoder` decodes only from the keyframe before each wanted frame,
   seeking when that skips frames and decoding on when targets are dense.
   Frames are matched by exact timestamp: each is the frame a full sequential
   decode gives at that index, or a `VideoError`, never a substitute.

Frames come back upright: the display matrix (rotation side data) is applied.
`probe_video` reads only the header and the first frame; it does not check
that the rest of the file is whole (`read_frames` does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longrl.video.errors import VideoError
from longrl.video.libav_log import capture_libav_errors
from longrl.video.opening import open_media
from longrl.video.sampling import (
    DEFAULT_MAX_FRAMES,
    DEFAULT_MIN_FRAMES,
    check_request,
    plan_frames,
)
from longrl.video.target_decoder import TargetDecoder
from longrl.video.timeline import scan_timeline


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream."""

    path: str
    duration: float  # seconds of video
    native_fps: float  # header's average rate; from read_frames: frame_count / duration
    frame_count: int
    frame_count_exact: bool  # False: estimated as duration * native_fps
    width: int  # upright, i.e. after rotation
    height: int
    rotation: int  # clockwise degrees applied to show the picture upright: 0/90/180/270
    has_audio: bool
    codec: str  # e.g. "h264"
    container: str  # FFmpeg demuxer name, e.g. "matroska,webm"


@dataclass(frozen=True)
class DecodedFrames:
    """The sampled frames of one video and where they come from."""

    frames: np.ndarray  # uint8 [T, H, W, 3] RGB, upright; torch.from_numpy shares it
    timestamps: tuple[float, ...]  # seconds from the first frame, one per returned frame
    indices: tuple[int, ...]  # position of each frame in the full decode order
    info: VideoInfo  # frame_count/duration exact, from the packet scan
    requested: int  # frames the request asked for (> T when the video is shorter)
    frames_decoded: int  # work done: frames the decoder produced
    seeks: int


def probe_video(path: str | Path) -> VideoInfo:
    """Read the header and decode the first frame (for rotation and true size)."""
    with open_media(path) as container:
        stream = _video_stream(container, path)
        first = _first_frame(container, stream, path)
        return _info(container, stream, path, first.width, first.height, first.rotation)


def read_frames(
    path: str | Path,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    min_frames: int = DEFAULT_MIN_FRAMES,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> DecodedFrames:
    """Decode the frames that `longrl.video.sampling` picks (see its rules).

    Raises `SamplingError` for an invalid request (before touching the file)
    and `VideoError` for a file that cannot give the frames.
    """
    check_request(num_frames, fps, min_frames, max_frames)
    with _open_and_scan(path) as (container, stream, timeline, libav_log):
        plan = plan_frames(
            timeline.frame_times,
            timeline.duration,
            num_frames=num_frames,
            fps=fps,
            min_frames=min_frames,
            max_frames=max_frames,
        )
        frames = _FrameSink(path, timeline, plan.indices)
        decoder = TargetDecoder(container, stream, timeline, path, libav_log)
        decoder.decode(sorted(frames.slots), frames.keep)
        info = _info_from_scan(path, container, stream, timeline, frames)
    return DecodedFrames(
        frames=frames.array,
        timestamps=plan.timestamps,
        indices=plan.indices,
        info=info,
        requested=plan.requested,
        frames_decoded=decoder.frames_decoded,
        seeks=decoder.seeks,
    )


class _FrameSink:
    """Writes each decoded frame, upright RGB, straight into the output array.

    No list of pictures is stacked afterwards: the peak memory is the output
    plus one frame. A frame chosen twice (variable frame rate) fills both slots.
    """

    def __init__(self, path, timeline, indices: tuple[int, ...]) -> None:
        self.path = path
        self.slots: dict[int, list[int]] = {}  # pts -> positions in the output
        for position, index in enumerate(indices):
            self.slots.setdefault(timeline.pts[index], []).append(position)
        self.count = len(indices)
        self.array: np.ndarray | None = None
        self.stored_size = (0, 0)  # (width, height) as coded
        self.ccw_rotation = 0

    def keep(self, pts: int, frame) -> None:
        if self.array is None:
            self.stored_size = (frame.width, frame.height)
            self.ccw_rotation = frame.rotation
            width, height = _upright_size(frame.width, frame.height, frame.rotation)
            self.array = np.empty((self.count, height, width, 3), np.uint8)
        elif (frame.width, frame.height) != self.stored_size:
            raise VideoError(
                self.path,
                f"the frame size changes mid-stream ({self.stored_size} to "
                f"{(frame.width, frame.height)}), so frames cannot share one array",
                "re-encode it to one size (e.g. `ffmpeg -i IN -vf scale=W:H OUT.mp4`)",
            )
        upright = _turn_upright(frame.to_ndarray(format="rgb24"), self.ccw_rotation)
        for position in self.slots[pts]:
            self.array[position] = upright


@contextmanager
def _open_and_scan(path: str | Path) -> Iterator[tuple]:
    """Open and scan the file while listening for FFmpeg's damage reports."""
    with capture_libav_errors() as libav_log, open_media(path) as container:
        stream = _video_stream(container, path)
        # One thread: FFmpeg then logs on this thread, where the capture hears it.
        stream.thread_type = "NONE"
        stream.thread_count = 1
        timeline = scan_timeline(container, stream, path, libav_log)
        yield container, stream, timeline, libav_log


def _video_stream(container, path):
    if not container.streams:
        raise VideoError(path, "holds no streams at all (a header without any video)")
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        raise VideoError(
            path,
            f"has no video stream (streams: {', '.join(kinds)}; an audio-only file?)",
            "use a file with a video stream; for audio use longrl.video.read_audio",
        )
    return container.streams.video[0]


def _first_frame(container, stream, path):
    try:
        for frame in container.decode(stream):
            return frame
    except Exception as error:  # av raises many types; all mean the same here
        raise VideoError(path, f"decoding the first frame failed: {error}") from error
    raise VideoError(
        path, "the video stream has zero frames", "use a file that holds at least one video frame"
    )


def _clockwise(ccw_rotation: int) -> int:
    return -round(ccw_rotation / 90) * 90 % 360


def _turn_upright(picture: np.ndarray, ccw_rotation: int) -> np.ndarray:
    # The display matrix turns the stored picture counter-clockwise by
    # `ccw_rotation`; np.rot90 turns counter-clockwise for positive k. Angles
    # off a quarter turn (never seen from cameras) round to the nearest one;
    # mirroring in the matrix is not applied.
    quarter_turns = round(ccw_rotation / 90) % 4
    if quarter_turns == 0:
        return picture
    return np.ascontiguousarray(np.rot90(picture, k=quarter_turns))


def _upright_size(width: int, height: int, ccw_rotation: int) -> tuple[int, int]:
    return (height, width) if _clockwise(ccw_rotation) in (90, 270) else (width, height)


def _info(container, stream, path, width, height, ccw_rotation) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1e6
    else:
        duration = 0.0
    fps = float(rate) if rate else 0.0
    exact = bool(stream.frames)
    count = stream.frames if exact else max(1, round(duration * fps))
    upright_w, upright_h = _upright_size(width, height, ccw_rotation)
    return VideoInfo(
        path=str(path),
        duration=duration,
        native_fps=fps,
        frame_count=count,
        frame_count_exact=exact,
        width=upright_w,
        height=upright_h,
        rotation=_clockwise(ccw_rotation),
        has_audio=bool(container.streams.audio),
        codec=stream.codec_context.name,
        container=container.format.name,
    )


def _info_from_scan(path, container, stream, timeline, frames: _FrameSink) -> VideoInfo:
    """Header info corrected by the packet scan: exact count, duration, mean rate."""
    width, height = frames.stored_size
    info = _info(container, stream, path, width, height, frames.ccw_rotation)
    count = len(timeline.pts)
    fps = count / timeline.duration if timeline.duration > 0 else info.native_fps
    return dataclasses.replace(
        info,
        duration=timeline.duration,
        native_fps=fps,
        frame_count=count,
        frame_count_exact=True,
    )
