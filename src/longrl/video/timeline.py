"""Every frame's presentation time and the keyframes, read from packets only.

Demuxing reads the file once but decodes nothing; it gives the exact frame
list (variable frame rate included) that sampling needs and the keyframe
positions that seeking needs. It is also where a truncated or damaged file
shows: fewer frames or less time than the header declares, packets flagged
corrupt, or FFmpeg's own complaints (Matroska: "File ended prematurely").

Truncation policy: a file whose packets stop short of what its header declares
is rejected with `VideoError`, even when the sampled frames would exist:
"uniform over the whole video" is meaningless when the end is missing, and a
silently different sample is worse than a clear error.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from longrl.video.errors import VideoError
from longrl.video.libav_log import libav_errors_in

# Packets may end this much before the declared duration without the file
# counting as truncated: headers round, and an audio track's last packet may
# be shorter than its nominal duration (seen: 51 ms for AAC in Matroska). The
# longest packet duration scales it so a low-frame-rate video's last frame
# counts as "one packet" too. (Matroska/WebM cuts are caught by FFmpeg's
# complaint, MP4/MOV cuts by the missing index, AVI cuts by the frame count.)
TRUNCATION_TOLERANCE_S = 0.1
TRUNCATION_TOLERANCE_PACKETS = 1.5
_REENCODE = "re-download the file or re-encode it (e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`)"


@dataclass(frozen=True)
class FrameTimeline:
    """The video stream's frames in presentation order (timestamps in `time_base`)."""

    pts: tuple[int, ...]  # sorted, distinct
    keyframe_pts: tuple[int, ...]  # sorted; pts[0] is always among them
    # Keyframes followed (in decode order) by frames shown before them: an
    # open GOP, whose leading frames need the previous GOP.
    open_keyframes: frozenset[int]
    time_base: Fraction
    end_pts: int  # where the last frame stops being shown

    @property
    def start_pts(self) -> int:
        return self.pts[0]

    def seconds(self, pts: int) -> float:
        """Time of `pts` measured from the first frame (the first frame is at 0.0)."""
        return float((pts - self.start_pts) * self.time_base)

    @property
    def frame_times(self) -> list[float]:
        return [self.seconds(p) for p in self.pts]

    @property
    def duration(self) -> float:
        return self.seconds(self.end_pts)

    def index_of(self, pts: int) -> int:
        return bisect.bisect_left(self.pts, pts)

    def keyframe_before(self, pts: int) -> int:
        """The last keyframe shown at or before `pts` (decoding `pts` starts there)."""
        return self.keyframe_pts[bisect.bisect_right(self.keyframe_pts, pts) - 1]


def scan_timeline(container, stream, path: str | Path, libav_log: list) -> FrameTimeline:
    """Demux every packet of an open container; check it is whole; list the frames.

    `libav_log` is the list `capture_libav_errors` fills since before the file
    was opened (opening already reads ahead, so damage can show there).
    """
    frames: list[tuple[int, bool, int]] = []  # (pts, keyframe, duration), decode order
    # Per stream index, in that stream's time base (no Fraction maths per packet):
    ends: dict[int, int] = {}  # where its last packet stops
    longest: dict[int, int] = {}  # its longest packet duration
    video_index = stream.index
    try:
        for packet in container.demux():
            if packet.size == 0:
                continue  # the flush packet demux yields at the end
            if packet.is_corrupt:
                raise VideoError(
                    path,
                    f"packet at byte {packet.pos} of stream {packet.stream_index} is "
                    "flagged corrupt (the file is truncated or damaged)",
                    _REENCODE,
                )
            timestamp = packet.pts
            if timestamp is None:
                timestamp = packet.dts
                if timestamp is None:
                    continue
            duration = packet.duration or 0
            index = packet.stream_index
            if timestamp + duration > ends.get(index, timestamp + duration - 1):
                ends[index] = timestamp + duration
            if duration > longest.get(index, -1):
                longest[index] = duration
            if index == video_index and not packet.is_discard:
                frames.append((timestamp, packet.is_keyframe, duration))
    except VideoError:
        raise
    except Exception as error:  # av raises many types; all mean the same here
        raise VideoError(path, f"reading packets failed: {error}", _REENCODE) from error
    time_bases = {s.index: s.time_base for s in container.streams}
    stream_ends = [float(end * time_bases[i]) for i, end in ends.items()]
    longest_packet_s = max((float(d * time_bases[i]) for i, d in longest.items()), default=0.0)
    errors = libav_errors_in(libav_log)
    if errors:
        # e.g. Matroska: "File ended prematurely" (a cut download) or
        # "Element ... exceeds containing master element" (damaged bytes).
        raise VideoError(path, f"FFmpeg reports damage ({errors})", _REENCODE)

    _check_not_truncated(container, stream, path, frames, stream_ends, longest_packet_s)
    if not frames:
        raise VideoError(
            path,
            "the video stream has zero frames",
            "use a file that holds at least one video frame",
        )
    open_keyframes = _open_gop_keyframes(frames)
    frames.sort()
    pts = [p for p, _, _ in frames]
    if len(set(pts)) != len(pts):
        raise VideoError(
            path,
            "several video frames share one timestamp, so frames cannot be told apart",
            "remux or re-encode the file (e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`)",
        )
    keyframes = [p for p, key, _ in frames if key]
    if not keyframes or keyframes[0] != pts[0]:
        # Without a keyframe first, frames before the first listed keyframe
        # can still be decoded sequentially from the file start: treat the
        # start as the place decoding begins.
        keyframes = [pts[0], *keyframes]
    last_duration = frames[-1][2] or _typical_gap(pts)
    return FrameTimeline(
        pts=tuple(pts),
        keyframe_pts=tuple(sorted(set(keyframes))),
        open_keyframes=frozenset(open_keyframes),
        time_base=stream.time_base,
        end_pts=pts[-1] + last_duration,
    )


def _open_gop_keyframes(frames_in_decode_order: list[tuple[int, bool, int]]) -> set[int]:
    opened: set[int] = set()
    keyframe = None
    for pts, is_keyframe, _ in frames_in_decode_order:
        if is_keyframe:
            keyframe = pts
        elif keyframe is not None and pts < keyframe:
            opened.add(keyframe)
    return opened


def _typical_gap(pts: list[int]) -> int:
    if len(pts) < 2:
        return 0
    gaps = sorted(b - a for a, b in itertools.pairwise(pts))
    return gaps[len(gaps) // 2]


def _check_not_truncated(container, stream, path, frames, stream_ends, longest_packet_s) -> None:
    declared_frames = stream.frames or 0
    if declared_frames and len(frames) < declared_frames:
        raise VideoError(
            path,
            f"truncated: the header declares {declared_frames} video frames "
            f"but the file holds {len(frames)}",
            _REENCODE,
        )
    if container.duration is None or container.duration <= 0:
        return
    start = (container.start_time or 0) / 1e6
    declared = container.duration / 1e6
    found = max(stream_ends) - start if stream_ends else 0.0
    tolerance = max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_PACKETS * longest_packet_s)
    if found < declared - tolerance:
        raise VideoError(
            path,
            f"truncated: the header declares {declared:.2f} s but packets stop at {found:.2f} s",
            _REENCODE,
        )
