"""The one sample type every reader produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Marks where a video goes inside `Sample.prompt`. Readers normalise every
# dataset format to this; the input builder replaces it by the vision block.
VIDEO_PLACEHOLDER = "<video>"
IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True)
class Sample:
    """One question about zero or more videos.

    `prompt` holds the question text with one `<video>` per entry of `videos`
    (readers insert it in front of the text when a record has none).
    `answer` is the ground truth with any `<answer>` tags stripped (e.g. "B").
    `extra` keeps every other column of the record; rewards get it as kwargs.
    `source` says where the record came from ("file.jsonl:17") for messages.
    """

    problem_id: str
    prompt: str
    answer: str
    videos: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    reasoning: str | None = None
    problem_type: str | None = None
    data_type: str | None = None
    fps: float | None = None
    num_frames: int | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
