"""Which frames of a video to sample: pure functions, no I/O.

Two ways to ask (exactly one, or neither for the default):

* `num_frames=N`: N frames spread uniformly over the whole video.
* `fps=F`: F frames per second of video, i.e. `duration * F` frames, kept
  within `[min_frames, max_frames]`.
* neither: `fps=DEFAULT_FPS` (2.0, the rate Qwen2.5-VL was trained with).
* both: `SamplingError` (the two disagree about the count; say which you mean).

The count is made a multiple of `TEMPORAL_PATCH_SIZE` (2): Qwen2.5-VL's vision
tower merges every 2 consecutive frames into one temporal patch, so an odd
count would make the preprocessor repeat the last frame. `num_frames` is
rounded *up* (5 -> 6: never fewer than asked), the fps count *down*
(10.9 s at 1 fps -> 10: never faster than asked); the bounds are rounded
inwards to even numbers first (min up, max down).

`min_frames`/`max_frames` bound the fps count only. An explicit `num_frames`
is taken as is, but must not exceed `max_frames` (else `SamplingError`, so a
memory bound is never broken silently); `max_frames` itself is at most
`MAX_FRAMES_LIMIT` (8192).

Which frames: the count's target times are spaced evenly from the first
frame's time to the last frame's time (both ends included), and each target
takes the frame whose presentation time is nearest (a tie goes to the earlier
frame, the one on screen at that instant). Times are the frames' real
timestamps, so variable-frame-rate videos are sampled uniformly in *time*; a
frame shown for longer than the sample spacing can then be picked for two
neighbouring targets, and the indices are non-decreasing rather than strictly
increasing. For constant frame rate and count <= frames, indices are distinct.

No more frames than the count: frames are never invented. The plan then
holds every frame of the video once, in order (so its length can be odd, or even 1);
`FramePlan.requested` keeps the count that was asked for. Padding the time
axis to the temporal patch is the preprocessor's job.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

TEMPORAL_PATCH_SIZE = 2
DEFAULT_FPS = 2.0
DEFAULT_MIN_FRAMES = 4
DEFAULT_MAX_FRAMES = 768
MAX_FRAMES_LIMIT = 8192
# Two target/frame distances closer than this count as a tie (float noise).
_TIE_TOLERANCE_S = 1e-9


class SamplingError(ValueError):
    """The sampling request itself is invalid (independent of any video)."""


@dataclass(frozen=True)
class FramePlan:
    """The frames to take: positions in the video's frame list and their times."""

    indices: tuple[int, ...]  # into the video's frames in presentation order
    timestamps: tuple[float, ...]  # seconds, of each chosen frame
    requested: int  # the count asked for; > len(indices) when the video is shorter

    @property
    def short_video(self) -> bool:
        """True when the video had fewer frames than requested (all were taken)."""
        return len(self.indices) < self.requested


def round_up_to_patch(count: int) -> int:
    return -(-count // TEMPORAL_PATCH_SIZE) * TEMPORAL_PATCH_SIZE


def round_down_to_patch(count: int) -> int:
    return count // TEMPORAL_PATCH_SIZE * TEMPORAL_PATCH_SIZE


def check_request(
    num_frames: int | None, fps: float | None, min_frames: int, max_frames: int
) -> None:
    """Raise `SamplingError` for a request no video could satisfy."""
    if num_frames is not None and fps is not None:
        raise SamplingError(
            f"got both num_frames={num_frames} and fps={fps}; give one of them "
            "(num_frames: a fixed count over the whole video; fps: frames per second)"
        )
    if not 1 <= max_frames <= MAX_FRAMES_LIMIT:
        raise SamplingError(f"max_frames={max_frames} must be in [1, {MAX_FRAMES_LIMIT}]")
    if round_down_to_patch(max_frames) < TEMPORAL_PATCH_SIZE:
        raise SamplingError(f"max_frames={max_frames} must be at least {TEMPORAL_PATCH_SIZE}")
    if min_frames < 1 or round_up_to_patch(min_frames) > round_down_to_patch(max_frames):
        raise SamplingError(
            f"min_frames={min_frames} must be >= 1 and, rounded up to a multiple of "
            f"{TEMPORAL_PATCH_SIZE}, not above max_frames={max_frames} rounded down"
        )
    if num_frames is not None:
        if num_frames < 1:
            raise SamplingError(f"num_frames={num_frames} must be >= 1")
        if round_up_to_patch(num_frames) > round_down_to_patch(max_frames):
            raise SamplingError(
                f"num_frames={num_frames} (rounded up to {round_up_to_patch(num_frames)}) "
                f"exceeds max_frames={max_frames}; raise max_frames or ask for fewer frames"
            )
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise SamplingError(f"fps={fps} must be a positive number")


def frame_count(
    duration: float,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    min_frames: int = DEFAULT_MIN_FRAMES,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> int:
    """How many frames the request asks of a video lasting `duration` seconds.

    This is the count before looking at how many frames the video has (see
    `plan_frames` for that); always a multiple of TEMPORAL_PATCH_SIZE.
    """
    check_request(num_frames, fps, min_frames, max_frames)
    if num_frames is not None:
        return round_up_to_patch(num_frames)
    rate = DEFAULT_FPS if fps is None else fps
    # The epsilon keeps 10 s * 0.2 fps (1.9999999...) from flooring to 0.
    raw = math.floor(max(duration, 0.0) * rate + 1e-9)
    count = round_down_to_patch(raw)
    return min(max(count, round_up_to_patch(min_frames)), round_down_to_patch(max_frames))


def target_times(first: float, last: float, count: int) -> list[float]:
    """`count` evenly spaced times from `first` to `last`, both included."""
    if count == 1:
        return [first]
    step = (last - first) / (count - 1)
    return [first + k * step for k in range(count)]


def nearest_frames(frame_times: Sequence[float], targets: Sequence[float]) -> list[int]:
    """For each target time, the index of the frame nearest in time (ties: earlier).

    `frame_times` must be sorted ascending.
    """
    chosen = []
    for target in targets:
        after = bisect.bisect_left(frame_times, target)
        if after == 0:
            chosen.append(0)
        elif after == len(frame_times):
            chosen.append(len(frame_times) - 1)
        else:
            before_gap = target - frame_times[after - 1]
            after_gap = frame_times[after] - target
            take_later = after_gap < before_gap - _TIE_TOLERANCE_S
            chosen.append(after if take_later else after - 1)
    return chosen


def constant_rate_times(num_frames: int, fps: float, start: float = 0.0) -> list[float]:
    """Frame times of a constant-frame-rate video, for when only metadata is known."""
    return [start + i / fps for i in range(num_frames)]


def plan_frames(
    frame_times: Sequence[float],
    duration: float,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    min_frames: int = DEFAULT_MIN_FRAMES,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> FramePlan:
    """Choose frames from a video whose frames show at `frame_times` (s, ascending).

    `duration` (s) is what the fps rule multiplies: for a constant-rate video
    of N frames at r fps it is N / r (the last frame's display time included).
    See the module docstring for every rule.
    """
    count = frame_count(
        duration, num_frames=num_frames, fps=fps, min_frames=min_frames, max_frames=max_frames
    )
    if any(later < earlier for earlier, later in itertools.pairwise(frame_times)):
        raise ValueError("frame_times must be sorted ascending")
    if len(frame_times) <= count:
        indices = list(range(len(frame_times)))
    else:
        targets = target_times(frame_times[0], frame_times[-1], count)
        indices = nearest_frames(frame_times, targets)
    return FramePlan(
        indices=tuple(indices),
        timestamps=tuple(frame_times[i] for i in indices),
        requested=count,
    )
