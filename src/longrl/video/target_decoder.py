"""Decode frames at given timestamps, seeking only when that skips frames.

For each wanted timestamp, in order: when the keyframe it is predicted from
lies beyond the next frame the decoder would give (by at least
SEEK_MIN_SKIPPED_FRAMES frames), seek to that keyframe; otherwise keep
decoding forward (dense targets decode sequentially, no frame twice). Frames
are matched by exact timestamp, so each picture is the one a full sequential
decode gives at that position.

Damage is never passed on as a picture. A wanted frame fails with
`VideoError` when the decoder raises, skips it, flags it corrupt, or logs an
error (FFmpeg ERROR level) since the last keyframe: predicted frames inherit a
damaged reference's errors without being flagged themselves. After a seek to
a keyframe with leading pictures (open GOP), errors logged before that
keyframe comes out are the leading pictures' missing references, expected and
ignored; those pictures are shown before the keyframe and are never wanted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from longrl.video.errors import VideoError
from longrl.video.libav_log import libav_errors_in
from longrl.video.timeline import FrameTimeline

# A seek flushes the decoder and repositions the demuxer; when it would skip
# fewer frames than this, decoding on is as cheap and keeps dense runs sequential.
SEEK_MIN_SKIPPED_FRAMES = 4


class TargetDecoder:
    """Decode an open container's video stream at the timestamps asked for."""

    def __init__(self, container, stream, timeline: FrameTimeline, path, libav_log: list) -> None:
        self.container = container
        self.stream = stream
        self.timeline = timeline
        self.path = path
        self.frames_decoded = 0  # frames the decoder produced (work done)
        self.seeks = 0
        self._log = libav_log  # live list filled by capture_libav_errors
        self._log_seen = 0
        self._frames: Iterator | None = None
        self._next_index = 0  # timeline position of the frame the decoder gives next
        self._pushed_back = None  # a frame read ahead while checking a seek
        self._damage = ""  # why frames since the last keyframe are not to be trusted
        self._settling = False  # after a seek to an open-GOP keyframe, before it comes out

    def decode(self, wanted: list[int], keep: Callable[[int, object], None]) -> None:
        """Decode the timestamps `wanted` (ascending); hand each frame to `keep(pts, frame)`."""
        self._seek_to_keyframe(self.timeline.start_pts)  # the scan left us at the end
        for target in wanted:
            if self._should_seek(target):
                self._seek_for(target)
            frame = self._advance_to(target)
            if self._damage:
                self._fail(
                    target, f"it or a frame it is predicted from is damaged ({self._damage})"
                )
            keep(target, frame)

    def _should_seek(self, target: int) -> bool:
        """Seek when enough frames lie between the next frame and the target's keyframe."""
        keyframe_index = self.timeline.index_of(self.timeline.keyframe_before(target))
        return keyframe_index - self._next_index >= SEEK_MIN_SKIPPED_FRAMES

    def _seek_for(self, target: int) -> None:
        """Seek to the target's keyframe; step back a keyframe while a seek overshoots."""
        keyframes = self.timeline.keyframe_pts
        k = keyframes.index(self.timeline.keyframe_before(target))
        while True:
            self._seek_to_keyframe(keyframes[k])
            first = self._next_frame(target)
            if first is None or first.pts <= target:
                self._pushed_back = first
                return
            if k == 0:
                self._fail(target, f"decoding from the file start begins after it ({first.pts})")
            k -= 1  # the demuxer landed after the target: start one keyframe earlier

    def _advance_to(self, target: int):
        frame, self._pushed_back = self._pushed_back, None
        while True:
            if frame is None:
                frame = self._next_frame(target)
            if frame is None:
                self._fail(target, "the decoder ended before producing it")
            if frame.pts == target:
                return frame
            if frame.pts > target:
                self._fail(target, f"the decoder went from before it to pts {frame.pts}")
            frame = None

    def _next_frame(self, target: int):
        try:
            frame = next(self._frames, None)
        except Exception as error:  # av raises many types; all mean the same here
            self._fail(target, f"decoding failed: {error}")
        new_errors = libav_errors_in(self._log[self._log_seen :])
        self._log_seen = len(self._log)
        if frame is None:
            return None
        if frame.pts is None:
            self._fail(target, "the decoder returned a frame without a timestamp")
        self.frames_decoded += 1
        self._next_index = self.timeline.index_of(frame.pts) + 1
        if frame.key_frame:
            self._damage = ""
        if frame.is_corrupt:
            self._damage = "the decoder flags a frame corrupt"
        if new_errors and not self._settling:
            self._damage = f"FFmpeg: {new_errors}"
        if frame.key_frame:
            self._settling = False
        return frame

    def _seek_to_keyframe(self, keyframe: int) -> None:
        self.seeks += 1
        self.container.seek(keyframe, stream=self.stream, backward=True, any_frame=False)
        self._frames = self._decoded_frames()
        self._next_index = self.timeline.index_of(keyframe)
        self._pushed_back = None
        self._damage = ""
        self._settling = keyframe in self.timeline.open_keyframes

    def _decoded_frames(self) -> Iterator:
        for packet in self.container.demux(self.stream):
            yield from packet.decode()

    def _fail(self, target: int, why: str):
        index = self.timeline.index_of(target)
        raise VideoError(
            self.path,
            f"frame {index} (t={self.timeline.seconds(target):.3f} s) cannot be decoded: {why}",
        )
