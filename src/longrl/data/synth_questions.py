"""Question kinds about a scene sequence: question, 4 options, answer, reasoning.

Every kind needs the whole video (order, neighbours, counts, totals), and its
reasoning follows one regular shape: the scene list with timestamps, one
sentence specific to the kind, then "Therefore the answer is X." Writing the
scene list first turns every kind into a reading task over that list, which is
what chain-of-thought SFT is meant to teach.

Two reasoning styles list the scenes (`REASONING_STYLES`): "timed" cites each
scene's start and end in seconds; "timeline" names the colour of each of the
video's equal parts (slots) in order, without times (about half the tokens; a
video sampled at 2 frames per slot shows each slot in one temporal patch), and
ends "Therefore the answer is <option text> <letter>." Naming the option text
right before its letter matters for tiny models: finding the letter of a colour
is then one attention step from that colour token (measured: a 2-layer model
learns it in a few hundred steps, and not in 3000 when the letter follows
"the answer is" with the colour a sentence earlier).

`pose` picks what to ask (or None when the kind does not fit the video);
`finish` puts the answer at a chosen letter, so the caller can balance letters.
All functions are pure given the `random.Random`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from longrl.data.synth_scenes import TimedScene

LETTERS = "ABCD"
# Easy kinds read one end of the video; medium ones a neighbour or a count of
# one colour; hard ones compare the whole video.
KIND_LEVEL: dict[str, str] = {
    "first": "easy",
    "last": "easy",
    "after": "medium",
    "before": "medium",
    "count": "medium",
    "distinct": "hard",
    "longest": "hard",
    "earliest": "hard",
}
KINDS: tuple[str, ...] = tuple(KIND_LEVEL)
NUMERIC_KINDS = ("count", "distinct")
REASONING_STYLES = ("timed", "timeline")
# How the SFT target answers: "letter" (<answer>B</answer>) or "text", the option's
# own text (<answer>blue</answer>), which the shared answer extractor maps to its
# letter. Only the SFT split uses "text": RL and eval records always hold the letter.
ANSWER_STYLES = ("letter", "text")


@dataclass(frozen=True)
class Posed:
    """What to ask, before the options are laid out.

    Colour answers have `distractors` (best first; the options are the answer
    and the first 3, in any order). Numeric answers have `numbers`, the kind's
    4 fixed options in increasing order, so the letter follows the value.
    `untimed_conclusion` replaces `conclusion` in the timeline style when the
    conclusion cites seconds.
    """

    kind: str
    question: str
    answer: str
    conclusion: str
    distractors: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    untimed_conclusion: str | None = None


@dataclass(frozen=True)
class Question:
    kind: str
    question: str
    options: tuple[str, ...]  # option texts, in letter order
    answer_letter: str
    reasoning: str | None  # None: an answer-only record (SynthConfig.sft_reasoning_shares)
    reply: str = ""  # what the record's <answer> tag holds: the letter, or the option text

    def __post_init__(self) -> None:
        if not self.reply:
            object.__setattr__(self, "reply", self.answer_letter)

    @property
    def problem(self) -> str:
        lines = [
            f"{letter}. {option}" for letter, option in zip(LETTERS, self.options, strict=True)
        ]
        return "\n".join([self.question, *lines])


def seconds(value: float) -> str:
    return f"{value:.1f}s"


def scene_listing(scenes: Sequence[TimedScene]) -> str:
    return " ".join(f"{seconds(s.start_s)}-{seconds(s.end_s)} {s.color}." for s in scenes)


def timeline_listing(scenes: Sequence[TimedScene]) -> str:
    """The colour of every slot in order: a scene of k slots is named k times."""
    return f"The video: {' '.join(s.color for s in scenes for _ in range(s.slots))}."


def number_options(kind: str, max_scenes: int, num_colors: int) -> tuple[int, ...]:
    """The 4 fixed options of a numeric kind.

    Fixed per data set, because options built around each answer (a window
    containing it) give the answer away by where the window starts.
    """
    if kind == "count":
        return (0, 1, 2, 3)
    if kind == "distinct":
        most = min(max_scenes, num_colors)
        low = max(2, most - 3)
        return tuple(range(low, low + 4))
    raise ValueError(f"{kind!r} is not a numeric kind ({', '.join(NUMERIC_KINDS)})")


def attainable_numbers(kind: str, max_scenes: int, num_colors: int) -> tuple[int, ...]:
    """Options that some video of at most `max_scenes` scenes can have as the answer."""
    options = number_options(kind, max_scenes, num_colors)
    if kind == "count":  # neighbours differ, so a colour fills at most every other scene
        return tuple(v for v in options if v <= (max_scenes + 1) // 2)
    return tuple(v for v in options if v <= min(max_scenes, num_colors))


def pose(
    kind: str,
    scenes: Sequence[TimedScene],
    palette: Sequence[str],
    rng: random.Random,
    *,
    target: int | None = None,
    numbers: Sequence[int] = (),
) -> Posed | None:
    """A question of `kind` about `scenes`, or None if the kind does not fit them.

    Numeric kinds need `numbers` (from `number_options`) and may be given a
    `target` answer: then they fit only videos where the answer is `target`.
    """
    if kind in NUMERIC_KINDS:
        if not numbers:
            raise ValueError(f"numeric kind {kind!r} needs its number options")
        posed = _NUMERIC_POSERS[kind](scenes, palette, rng, target)
        if posed is None or int(posed.answer) not in numbers:
            return None
        return replace(posed, numbers=tuple(str(v) for v in numbers))
    return _COLOR_POSERS[kind](scenes, palette, rng)


def feasible_letters(posed: Posed) -> list[int]:
    """Letter positions the answer can take (a numeric answer sits at its value's place)."""
    if posed.numbers:
        return [posed.numbers.index(posed.answer)]
    return list(range(len(LETTERS)))


def finish(
    posed: Posed,
    letter: int,
    scenes: Sequence[TimedScene],
    rng: random.Random,
    style: str = "timed",
    answer_style: str = "letter",
) -> Question:
    if letter not in feasible_letters(posed):
        raise ValueError(f"the answer of this {posed.kind} question cannot be at letter {letter}")
    if style not in REASONING_STYLES:
        raise ValueError(f"reasoning style must be one of {REASONING_STYLES}, got {style!r}")
    if answer_style not in ANSWER_STYLES:
        raise ValueError(f"answer style must be one of {ANSWER_STYLES}, got {answer_style!r}")
    if posed.numbers:
        options = list(posed.numbers)
    else:
        others = list(posed.distractors[: len(LETTERS) - 1])
        rng.shuffle(others)
        options = [*others[:letter], posed.answer, *others[letter:]]
    if style == "timed":
        reasoning = f"{scene_listing(scenes)} {posed.conclusion}"
        answer = LETTERS[letter]
    else:
        reasoning = f"{timeline_listing(scenes)} {posed.untimed_conclusion or posed.conclusion}"
        answer = f"{posed.answer} {LETTERS[letter]}"
    if answer_style == "text":
        answer = posed.answer
    reasoning = f"{reasoning} Therefore the answer is {answer}."
    reply = LETTERS[letter] if answer_style == "letter" else posed.answer
    return Question(posed.kind, posed.question, tuple(options), LETTERS[letter], reasoning, reply)


def _colors_in_order(scenes: Sequence[TimedScene]) -> list[str]:
    """Distinct colours by first appearance."""
    return list(dict.fromkeys(s.color for s in scenes))


def _distractors(
    scenes: Sequence[TimedScene], palette: Sequence[str], exclude: set[str], rng: random.Random
) -> tuple[str, ...]:
    """Colours seen in the video first (so presence alone never answers), then unseen ones."""
    seen = [c for c in _colors_in_order(scenes) if c not in exclude]
    unseen = [c for c in palette if c not in exclude and c not in seen]
    rng.shuffle(seen)
    rng.shuffle(unseen)
    return (*seen, *unseen)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _pose_first(scenes, palette, rng) -> Posed:
    answer = scenes[0].color
    return Posed(
        "first",
        "Which color fills the screen at the start of the video?",
        answer,
        f"The first scene is {answer}.",
        _distractors(scenes, palette, {answer}, rng),
    )


def _pose_last(scenes, palette, rng) -> Posed:
    answer = scenes[-1].color
    return Posed(
        "last",
        "Which color fills the screen at the end of the video?",
        answer,
        f"The last scene is {answer}.",
        _distractors(scenes, palette, {answer}, rng),
    )


def _unique_colors(scenes: Sequence[TimedScene]) -> set[str]:
    counts = Counter(s.color for s in scenes)
    return {color for color, n in counts.items() if n == 1}


def _pose_after(scenes, palette, rng) -> Posed | None:
    unique = _unique_colors(scenes)
    anchors = [i for i, s in enumerate(scenes[:-1]) if s.color in unique]
    if not anchors:
        return None
    i = rng.choice(anchors)
    anchor, answer = scenes[i].color, scenes[i + 1].color
    return Posed(
        "after",
        f"Which color comes right after the {anchor} scene?",
        answer,
        f"After {anchor} comes {answer}.",
        _distractors(scenes, palette, {answer, anchor}, rng),
    )


def _pose_before(scenes, palette, rng) -> Posed | None:
    unique = _unique_colors(scenes)
    anchors = [i for i, s in enumerate(scenes) if i > 0 and s.color in unique]
    if not anchors:
        return None
    i = rng.choice(anchors)
    anchor, answer = scenes[i].color, scenes[i - 1].color
    return Posed(
        "before",
        f"Which color comes right before the {anchor} scene?",
        answer,
        f"Before {anchor} comes {answer}.",
        _distractors(scenes, palette, {answer, anchor}, rng),
    )


def _pose_count(scenes, palette, rng, target) -> Posed | None:
    # The count is picked first (the caller balances targets), then a colour with
    # it: picking a colour first would make "1" the usual answer, which a model
    # could learn without watching.
    counts = Counter(s.color for s in scenes)
    by_count: dict[int, list[str]] = {}
    for color in palette:
        by_count.setdefault(counts.get(color, 0), []).append(color)
    n = rng.choice(sorted(by_count)) if target is None else target
    if n not in by_count:
        return None
    color = rng.choice(by_count[n])
    noun = "scene" if n == 1 else "scenes"
    return Posed(
        "count",
        f"How many separate {color} scenes are in the video?",
        str(n),
        f"{_capital(color)} appears in {n} {noun}.",
    )


def _pose_distinct(scenes, palette, rng, target) -> Posed | None:
    seen = _colors_in_order(scenes)
    if target is not None and len(seen) != target:
        return None
    return Posed(
        "distinct",
        "How many different colors appear in the video?",
        str(len(seen)),
        f"The colors are {', '.join(seen)}: {len(seen)} in total.",
    )


def _pose_longest(scenes, palette, rng) -> Posed | None:
    frames: Counter[str] = Counter()
    slots: Counter[str] = Counter()
    total_s: Counter[str] = Counter()
    for s in scenes:
        frames[s.color] += s.end_frame - s.start_frame
        slots[s.color] += s.slots
        total_s[s.color] += s.seconds
    by_frames = frames.most_common()
    by_slots = slots.most_common()
    # A clear winner: unique by at least one whole slot, and in frames too.
    if len(by_frames) < 2 or by_slots[0][1] == by_slots[1][1] or by_frames[0][1] == by_frames[1][1]:
        return None
    if by_frames[0][0] != by_slots[0][0]:
        return None
    answer = by_frames[0][0]
    order = _colors_in_order(scenes)
    totals = ", ".join(f"{c} {seconds(total_s[c])}" for c in order)
    parts = ", ".join(f"{c} {slots[c]}" for c in order)
    return Posed(
        "longest",
        "Which color is on screen for the longest total time?",
        answer,
        f"In total: {totals}. {_capital(answer)} is longest.",
        _distractors(scenes, palette, {answer}, rng),
        untimed_conclusion=f"In total: {parts}. The longest is {answer}.",
    )


def _pose_earliest(scenes, palette, rng) -> Posed | None:
    """Options exclude the opening colour, so this is a comparison, not `first` again."""
    first_seen = {}
    for s in scenes:
        first_seen.setdefault(s.color, s)
    opening = scenes[0].color
    present = [c for c in first_seen if c != opening]
    absent = [c for c in palette if c not in first_seen]
    sizes = [k for k in range(2, min(4, len(present)) + 1) if 4 - k <= len(absent)]
    if not sizes:
        return None
    k = rng.choice(sizes)
    chosen_present = rng.sample(present, k)
    options = chosen_present + rng.sample(absent, 4 - k)
    answer = min(chosen_present, key=lambda c: first_seen[c].start_frame)
    order = sorted(chosen_present, key=lambda c: first_seen[c].start_frame)
    seen_at = ", ".join(f"{c} at {seconds(first_seen[c].start_s)}" for c in order)
    return Posed(
        "earliest",
        "Which of these colors appears earliest in the video?",
        answer,
        f"First seen: {seen_at}. {_capital(answer)} is earliest.",
        tuple(c for c in options if c != answer),
        untimed_conclusion=f"First seen: {', '.join(order)}. The earliest is {answer}.",
    )


_COLOR_POSERS = {
    "first": _pose_first,
    "last": _pose_last,
    "after": _pose_after,
    "before": _pose_before,
    "longest": _pose_longest,
    "earliest": _pose_earliest,
}
_NUMERIC_POSERS = {"count": _pose_count, "distinct": _pose_distinct}
