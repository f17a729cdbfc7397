"""Scene sequences of the synthetic videos: palette, drawing, frame/time layout.

A synthetic video is a run of "scenes", each a solid full-frame colour. Scene
boundaries fall on a grid of `slots` equal parts of the video: a model that
samples 2*slots frames uniformly (e.g. 16 frames for 8 slots) sees every scene
in whole temporal patches of 2 frames, whatever the video's length. Adjacent
scenes differ in colour; a colour may come back later.

Everything here is pure (a `random.Random` is passed in).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

# Saturated colours far apart in RGB (and so after any normalisation), kept off
# the 0/255 rails so video YUV coding does not clip them. The first
# `num_colors` entries make the palette of a dataset.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (40, 70, 230),
    "yellow": (235, 220, 30),
    "magenta": (210, 40, 210),
    "cyan": (30, 210, 220),
    "white": (240, 240, 240),
    "black": (15, 15, 15),
}


@dataclass(frozen=True)
class Scene:
    """One colour held for `slots` grid slots."""

    color: str
    slots: int


@dataclass(frozen=True)
class TimedScene:
    """A scene placed in a video: frames [start_frame, end_frame), seconds likewise."""

    color: str
    slots: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


def palette_names(num_colors: int) -> tuple[str, ...]:
    if not 4 <= num_colors <= len(PALETTE):
        raise ValueError(
            f"num_colors must be in 4..{len(PALETTE)} (4 answer options), got {num_colors}"
        )
    return tuple(PALETTE)[:num_colors]


def draw_scenes(
    rng: random.Random, num_scenes: int, slots: int, colors: Sequence[str]
) -> tuple[Scene, ...]:
    """`num_scenes` scenes covering `slots` slots, each >= 1 slot, neighbours differ in colour."""
    if not 1 <= num_scenes <= slots:
        raise ValueError(f"num_scenes must be in 1..{slots} (slots), got {num_scenes}")
    cuts = sorted(rng.sample(range(1, slots), num_scenes - 1))
    edges = [0, *cuts, slots]
    scenes: list[Scene] = []
    for start, end in itertools.pairwise(edges):
        previous = scenes[-1].color if scenes else None
        color = rng.choice([c for c in colors if c != previous])
        scenes.append(Scene(color, end - start))
    return tuple(scenes)


def log_uniform_frames(rng: random.Random, min_frames: int, max_frames: int) -> int:
    """A frame count spread evenly over orders of magnitude (many short, some long videos)."""
    value = math.exp(rng.uniform(math.log(min_frames), math.log(max_frames)))
    return min(max_frames, max(min_frames, round(value)))


def slot_start_frames(num_frames: int, slots: int) -> list[int]:
    """Frame where each slot starts, plus `num_frames` at the end (integer maths: exact)."""
    if num_frames < slots:
        raise ValueError(f"a video of {num_frames} frames cannot hold {slots} slots")
    return [(k * num_frames + slots // 2) // slots for k in range(slots + 1)]


def place_scenes(scenes: Sequence[Scene], num_frames: int, fps: float) -> tuple[TimedScene, ...]:
    """Frames and seconds of each scene in a video of `num_frames` frames at `fps`."""
    slots = sum(scene.slots for scene in scenes)
    starts = slot_start_frames(num_frames, slots)
    placed = []
    slot = 0
    for scene in scenes:
        first, last = starts[slot], starts[slot + scene.slots]
        placed.append(TimedScene(scene.color, scene.slots, first, last, first / fps, last / fps))
        slot += scene.slots
    return tuple(placed)


def color_of_frame(scenes: Sequence[TimedScene], frame: int) -> str:
    for scene in scenes:
        if scene.start_frame <= frame < scene.end_frame:
            return scene.color
    raise ValueError(f"frame {frame} is outside the scenes")
