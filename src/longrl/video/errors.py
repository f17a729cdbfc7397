"""The one error type for a video file that cannot give what was asked."""

from __future__ import annotations

from pathlib import Path

DEFAULT_ACTION = (
    "check the file with `ffprobe`, re-download it, or re-encode it "
    "(e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`)"
)


class VideoError(Exception):
    """A video file is missing, unreadable, truncated, corrupt or has no usable video.

    `str(err)` names the file, says what is wrong and what to do about it.
    """

    def __init__(self, path: str | Path, reason: str, action: str = DEFAULT_ACTION) -> None:
        self.path = str(path)
        self.reason = reason
        self.action = action
        super().__init__(f"video {self.path}: {reason}; {action}")

    def __reduce__(self):  # keep the three fields when sent between processes
        return (type(self), (self.path, self.reason, self.action))
