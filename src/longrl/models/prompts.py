"""Prompt templates (thinking / non-thinking) and chat messages for one Sample.

The chat template of the processor turns these messages into text; the input
builder (`longrl.models.inputs`) then expands each video part into its block of
`<|video_pad|>` tokens. Training targets use the same tags the prompts ask for,
so rewards parse one format.
"""

from __future__ import annotations

import re
from typing import Any

from longrl.data.sample import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, Sample
from longrl.models.rope import ModelInputError

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

# What goes inside <answer></answer>, by Sample.problem_type. Multiple choice is
# the default because the long-video reasoning tasks are multiple choice.
_ANSWER_KIND = {
    None: "the letter of the correct option",
    "multiple choice": "the letter of the correct option",
    "numerical": "a number",
    "regression": "a number",
    "free-form": "a short phrase",
    "open-ended": "a short phrase",
}

NON_THINKING_INSTRUCTION = (
    "Give {kind} inside {open}{close} tags and nothing else, e.g. {open}{example}{close}."
)
THINKING_INSTRUCTION = (
    "First reason step by step about the question and the video inside {think_open}{think_close} "
    "tags. Then give {kind} inside {open}{close} tags, e.g. "
    "{think_open} ... {think_close}{open}{example}{close}."
)

_PLACEHOLDER_RE = re.compile(f"({re.escape(VIDEO_PLACEHOLDER)}|{re.escape(IMAGE_PLACEHOLDER)})")


def answer_instruction(thinking: bool, problem_type: str | None = None) -> str:
    """The sentence appended to the question saying how to format the reply."""
    kind = _ANSWER_KIND.get(problem_type, "the final answer")
    example = "B" if kind == _ANSWER_KIND[None] else "..."
    template = THINKING_INSTRUCTION if thinking else NON_THINKING_INSTRUCTION
    return template.format(
        kind=kind,
        open=ANSWER_OPEN,
        close=ANSWER_CLOSE,
        think_open=THINK_OPEN,
        think_close=THINK_CLOSE,
        example=example,
    )


def build_messages(
    sample: Sample, thinking: bool, system_prompt: str | None = None
) -> list[dict[str, Any]]:
    """Chat messages for one sample: [system?, user].

    The user content lists a video (or image) part wherever sample.prompt has a
    `<video>` (`<image>`) placeholder, in order, and the text between them;
    the answer-format instruction follows the question.
    """
    pieces = _PLACEHOLDER_RE.split(sample.prompt)
    n_videos = pieces.count(VIDEO_PLACEHOLDER)
    n_images = pieces.count(IMAGE_PLACEHOLDER)
    if n_videos != len(sample.videos) or n_images != len(sample.images):
        raise ModelInputError(
            f"{sample.source or sample.problem_id}: prompt has {n_videos} {VIDEO_PLACEHOLDER} and "
            f"{n_images} {IMAGE_PLACEHOLDER} placeholders but the sample lists "
            f"{len(sample.videos)} videos and {len(sample.images)} images; fix the record"
        )
    videos, images = iter(sample.videos), iter(sample.images)
    content: list[dict[str, Any]] = []
    for piece in pieces:
        if piece == VIDEO_PLACEHOLDER:
            content.append({"type": "video", "video": next(videos)})
        elif piece == IMAGE_PLACEHOLDER:
            content.append({"type": "image", "image": next(images)})
        elif piece.strip():
            content.append({"type": "text", "text": piece.strip()})
    instruction = answer_instruction(thinking, sample.problem_type)
    if content and content[-1]["type"] == "text":
        content[-1] = {"type": "text", "text": content[-1]["text"] + "\n" + instruction}
    else:
        content.append({"type": "text", "text": instruction})
    messages: list[dict[str, Any]] = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append({"role": "user", "content": content})
    return messages


def format_reasoning_target(reasoning: str | None, answer: str) -> str:
    """Assistant text for SFT: `<think>reasoning</think><answer>answer</answer>`.

    Without reasoning it is the non-thinking target `<answer>answer</answer>`.
    """
    answer_part = f"{ANSWER_OPEN}{answer.strip()}{ANSWER_CLOSE}"
    if reasoning is None:
        return answer_part
    return f"{THINK_OPEN}{reasoning.strip()}{THINK_CLOSE}{answer_part}"
