"""Synthetic long-video reasoning data in the LongVideo-Reason record format.

Each video is a run of solid-colour scenes (see `synth_scenes`); each record asks
one multiple-choice question about the whole run (see `synth_questions`) with a
timestamped reasoning annotation. `write_dataset(out, config)` writes

    out/videos/<split>_<index>.mp4   out/sft.jsonl  out/rl.jsonl  out/eval.jsonl
    out/manifest.json                (seed, parameters, per-split histograms)

Determinism: every split draws from its own `random.Random` seeded by
(seed, split), eval first, then rl, then sft, each refusing scene sequences an
earlier split used. So the same seed gives byte-identical records and videos,
the splits never share a video or a scene sequence, and the eval split depends
only on the seed, its size and the video parameters (not on --num-sft).
Per split, each video first gets the least-asked question kind(s) and, for a
numeric kind, the least-used answer value; scenes are then drawn until they fit.
Letters are balanced per kind. So no kind, letter or number is a free guess for
a model that reads only the text (measured: text-only accuracy ~25%).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from longrl.data.synth_questions import (
    ANSWER_STYLES,
    KIND_LEVEL,
    KINDS,
    LETTERS,
    NUMERIC_KINDS,
    REASONING_STYLES,
    Question,
    attainable_numbers,
    feasible_letters,
    finish,
    number_options,
    pose,
)
from longrl.data.synth_scenes import (
    PALETTE,
    TimedScene,
    draw_scenes,
    log_uniform_frames,
    palette_names,
    place_scenes,
)
from longrl.data.synth_video import encoder_description, video_rate, write_scene_video

SPLITS = ("sft", "rl", "eval")
PLAN_ORDER = ("eval", "rl", "sft")
# difficulty -> (fewest scenes, most scenes, question kinds)
DIFFICULTY: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "easy": (2, 5, ("first", "last", "after", "count")),
    "medium": (3, 6, KINDS),
    "hard": (4, 8, KINDS),
}
MAX_DRAWS_PER_VIDEO = 1000
_OWN_VIDEO = re.compile(r"^(sft|rl|eval)_\d{5}\.mp4$")


class SynthError(ValueError):
    """Settings that cannot produce the requested data set; the message says what to change."""


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    num_sft: int = 256  # records (questions) per split
    num_rl: int = 128
    num_eval: int = 64
    min_frames: int = 16
    max_frames: int = 4096
    size: int = 56
    fps: float = 4.0
    difficulty: str = "medium"
    slots: int = 8
    num_colors: int = 6
    questions_per_video: int = 1
    kinds: tuple[str, ...] | None = None  # None: the difficulty's kinds
    # How often the SFT split (the CoT annotations) asks each kind, relative to the
    # others: kind -> weight, 1 for kinds not named, 0 leaves a kind out. None: evenly.
    # RL and eval records do not depend on it.
    sft_kind_weights: dict[str, float] | None = None
    reasoning: str = "timed"  # see synth_questions.REASONING_STYLES
    # Share of each kind's SFT records that carry the reasoning annotation: kind ->
    # share, 1 for kinds not named. The others are bare multiple-choice records (the
    # letter, no reasoning), as most video QA training data is. RL and eval records
    # do not depend on it.
    sft_reasoning_shares: dict[str, float] | None = None
    sft_answer: str = "letter"  # the SFT split's answers; see synth_questions.ANSWER_STYLES

    def split_size(self, split: str) -> int:
        return {"sft": self.num_sft, "rl": self.num_rl, "eval": self.num_eval}[split]

    def scene_range(self) -> tuple[int, int]:
        low, high, _ = DIFFICULTY[self.difficulty]
        return min(low, self.slots), min(high, self.slots)

    def resolved_kinds(self) -> tuple[str, ...]:
        return self.kinds if self.kinds is not None else DIFFICULTY[self.difficulty][2]

    def kind_weight(self, split: str, kind: str) -> float:
        if split != "sft" or self.sft_kind_weights is None:
            return 1.0
        return float(self.sft_kind_weights.get(kind, 1.0))

    def split_kinds(self, split: str) -> tuple[str, ...]:
        return tuple(k for k in self.resolved_kinds() if self.kind_weight(split, k) > 0)

    def validate(self) -> None:
        if self.difficulty not in DIFFICULTY:
            raise SynthError(
                f"difficulty must be one of {sorted(DIFFICULTY)}, got {self.difficulty!r}"
            )
        if self.sft_answer not in ANSWER_STYLES:
            raise SynthError(
                f"sft_answer must be one of {list(ANSWER_STYLES)}, got {self.sft_answer!r}"
            )
        if self.reasoning not in REASONING_STYLES:
            raise SynthError(
                f"reasoning must be one of {list(REASONING_STYLES)}, got {self.reasoning!r}"
            )
        unknown = [k for k in self.resolved_kinds() if k not in KIND_LEVEL]
        if unknown or not self.resolved_kinds():
            raise SynthError(f"unknown question kinds {unknown}; choose from {', '.join(KINDS)}")
        if min(self.num_sft, self.num_rl, self.num_eval) < 0:
            raise SynthError("split sizes must be >= 0")
        weights = self.sft_kind_weights or {}
        outside = [k for k in weights if k not in self.resolved_kinds()]
        negative = [k for k, w in weights.items() if not w >= 0]
        if outside or negative or not self.split_kinds("sft"):
            raise SynthError(
                f"sft_kind_weights {weights} must name only the kinds "
                f"{list(self.resolved_kinds())}, with weights >= 0, not all 0"
            )
        fewest_kinds = min(len(self.resolved_kinds()), len(self.split_kinds("sft")))
        if not 1 <= self.questions_per_video <= fewest_kinds:
            raise SynthError(
                "questions_per_video must be between 1 and the number of kinds of every split "
                f"({fewest_kinds}): each question of a video is of another kind"
            )
        shares = self.sft_reasoning_shares or {}
        if any(k not in self.resolved_kinds() or not 0 <= v <= 1 for k, v in shares.items()):
            raise SynthError(
                f"sft_reasoning_shares {shares} must name only the kinds "
                f"{list(self.resolved_kinds())}, with shares between 0 and 1"
            )
        if self.slots < 2:
            raise SynthError(f"slots must be >= 2, got {self.slots}")
        if not self.slots <= self.min_frames <= self.max_frames:
            raise SynthError(
                f"need slots ({self.slots}) <= min_frames ({self.min_frames}) <= "
                f"max_frames ({self.max_frames}): every slot holds at least one frame"
            )
        if self.size % 2 or self.size < 16:
            raise SynthError(f"size must be even and >= 16, got {self.size}")
        if not self.fps > 0:
            raise SynthError(f"fps must be > 0, got {self.fps}")
        try:
            palette_names(self.num_colors)
        except ValueError as exc:
            raise SynthError(str(exc)) from exc


@dataclass(frozen=True)
class VideoPlan:
    split: str
    index: int
    num_frames: int
    fps: float
    scenes: tuple[TimedScene, ...]
    questions: tuple[Question, ...]

    @property
    def file(self) -> str:
        """Path relative to the output directory, as written in the records."""
        return f"videos/{self.split}_{self.index:05d}.mp4"


def plan_dataset(config: SynthConfig) -> dict[str, list[VideoPlan]]:
    """Every video's scenes and questions, without writing anything (pure)."""
    config.validate()
    used: set[tuple[tuple[str, int], ...]] = set()
    plans = {split: _plan_split(config, split, used) for split in PLAN_ORDER}
    plans["sft"] = _keep_reasoning_share(plans["sft"], config)
    return {split: plans[split] for split in SPLITS}


def _keep_reasoning_share(plans: list[VideoPlan], config: SynthConfig) -> list[VideoPlan]:
    """`plans` with all but `sft_reasoning_shares[kind]` of each kind's questions made
    bare: no reasoning, the letter as the answer (a text answer exists to match the
    reasoning's conclusion). Its own random stream: the videos and questions stay those
    of full shares, so runs that differ only in the shares see the same data."""
    shares = config.sft_reasoning_shares or {}
    if all(share >= 1 for share in shares.values()):
        return plans
    rng = random.Random(f"longrl-synth:{config.seed}:sft-reasoning")
    by_kind: dict[str, list[tuple[int, int]]] = {}
    for i, plan in enumerate(plans):
        for j, question in enumerate(plan.questions):
            by_kind.setdefault(question.kind, []).append((i, j))
    bare: set[tuple[int, int]] = set()
    for kind in sorted(by_kind):
        places = by_kind[kind]
        keep = round(shares.get(kind, 1.0) * len(places))
        bare.update(rng.sample(places, len(places) - keep))
    return [
        replace(
            plan,
            questions=tuple(
                replace(q, reasoning=None, reply=q.answer_letter) if (i, j) in bare else q
                for j, q in enumerate(plan.questions)
            ),
        )
        for i, plan in enumerate(plans)
    ]


def _plan_split(
    config: SynthConfig, split: str, used: set[tuple[tuple[str, int], ...]]
) -> list[VideoPlan]:
    rng = random.Random(f"longrl-synth:{config.seed}:{split}")
    balance = _Balance()
    plans: list[VideoPlan] = []
    remaining = config.split_size(split)
    while remaining > 0:
        asks = _choose_asks(config, split, min(config.questions_per_video, remaining), balance, rng)
        for _ in range(MAX_DRAWS_PER_VIDEO):
            plan = _draw_video(config, split, len(plans), rng, used, asks, balance)
            if plan is not None:
                break
        else:
            raise SynthError(
                f"could not draw a new distinct scene sequence fitting {[k for k, _ in asks]} "
                f"for {split} video {len(plans)} after {MAX_DRAWS_PER_VIDEO} tries; lower the "
                "split sizes or raise --slots / --colors / the difficulty"
            )
        plans.append(plan)
        remaining -= len(asks)
    return plans


@dataclass
class _Balance:
    """Per-split counts that steer kinds, numeric answers and letters to be even."""

    kinds: Counter[str] = field(default_factory=Counter)
    values: Counter[tuple[str, int]] = field(default_factory=Counter)
    letters: Counter[tuple[str, int]] = field(default_factory=Counter)  # (kind, letter)


def _least_used(items: Iterable[Any], count: Callable[[Any], int], rng: random.Random) -> list[Any]:
    """Items by how often they were used, ties in random order (so none is favoured)."""
    return sorted(items, key=lambda item: (count(item), rng.random()))


def _choose_asks(
    config: SynthConfig, split: str, wanted: int, balance: _Balance, rng: random.Random
) -> list[tuple[str, int | None]]:
    """The kinds to ask about the next video, and the answer each numeric kind must have."""
    _, most_scenes = config.scene_range()
    # A kind of weight w is asked as if it had been asked 1/w times as often: the
    # counts stay even relative to the weights.
    kinds = _least_used(
        config.split_kinds(split),
        lambda k: balance.kinds[k] / config.kind_weight(split, k),
        rng,
    )[:wanted]
    asks: list[tuple[str, int | None]] = []
    for kind in kinds:
        target = None
        if kind in NUMERIC_KINDS:
            values = attainable_numbers(kind, most_scenes, config.num_colors)
            target = _least_used(values, lambda v, k=kind: balance.values[(k, v)], rng)[0]
        asks.append((kind, target))
    return asks


def _fewest_scenes_for(asks: list[tuple[str, int | None]]) -> int:
    """Scenes a video needs for the numeric targets (n distinct colours; a colour n times)."""
    needed = 1
    for kind, target in asks:
        if kind == "distinct" and target is not None:
            needed = max(needed, target)
        if kind == "count" and target:
            needed = max(needed, 2 * target - 1)
    return needed


def _draw_video(
    config: SynthConfig,
    split: str,
    index: int,
    rng: random.Random,
    used: set[tuple[tuple[str, int], ...]],
    asks: list[tuple[str, int | None]],
    balance: _Balance,
) -> VideoPlan | None:
    """One video and its questions, or None when the draw repeats or does not fit the asks."""
    palette = palette_names(config.num_colors)
    low, high = config.scene_range()
    low = max(low, _fewest_scenes_for(asks))
    scenes = draw_scenes(rng, rng.randint(low, high), config.slots, palette)
    key = tuple((s.color, s.slots) for s in scenes)
    if key in used:
        return None
    num_frames = log_uniform_frames(rng, config.min_frames, config.max_frames)
    fps = float(video_rate(config.fps))
    timed = place_scenes(scenes, num_frames, fps)
    posed_list = []
    for kind, target in asks:
        numbers = ()
        if kind in NUMERIC_KINDS:
            numbers = number_options(kind, high, config.num_colors)
        posed = pose(kind, timed, palette, rng, target=target, numbers=numbers)
        if posed is None:
            return None
        posed_list.append(posed)
    questions = []
    for (kind, target), posed in zip(asks, posed_list, strict=True):
        # Even per kind (else a kind's favourite letter is a free guess), hence even overall.
        letter = _least_used(
            feasible_letters(posed), lambda i, k=kind: balance.letters[(k, i)], rng
        )[0]
        answer_style = config.sft_answer if split == "sft" else "letter"
        questions.append(finish(posed, letter, timed, rng, config.reasoning, answer_style))
        balance.kinds[kind] += 1
        balance.letters[(kind, letter)] += 1
        if target is not None:
            balance.values[(kind, target)] += 1
    used.add(key)
    return VideoPlan(split, index, num_frames, fps, timed, tuple(questions))


def plan_records(plan: VideoPlan) -> list[dict[str, Any]]:
    """The LongVideo-Reason records of one video (one per question)."""
    scenes = [
        {
            "color": s.color,
            "start": round(s.start_s, 4),
            "end": round(s.end_s, 4),
            "start_frame": s.start_frame,
            "end_frame": s.end_frame,
        }
        for s in plan.scenes
    ]
    records = []
    for j, q in enumerate(plan.questions):
        records.append(
            {
                "problem_id": f"synth-{plan.split}-{plan.index:05d}-{j}",
                "problem": q.problem,
                "options": [f"{letter}. {o}" for letter, o in zip(LETTERS, q.options, strict=True)],
                "answer": f"<answer>{q.reply}</answer>",
                **({} if q.reasoning is None else {"reasoning": q.reasoning}),
                "problem_type": q.kind,
                "data_type": "video",
                "videos": [plan.file],
                "level": KIND_LEVEL[q.kind],
                "scenes": scenes,
                "video_frames": plan.num_frames,
                "video_fps": plan.fps,
                "video_seconds": round(plan.num_frames / plan.fps, 4),
            }
        )
    return records


def write_dataset(
    out_dir: str | Path, config: SynthConfig, *, workers: int = 1, overwrite: bool = False
) -> dict[str, Any]:
    """Write videos, the three jsonl files and manifest.json; returns the manifest."""
    out = Path(out_dir)
    plans = plan_dataset(config)
    _prepare_output(out, overwrite)
    all_plans = [plan for split in SPLITS for plan in plans[split]]
    jobs = [(str(out / p.file), p.scenes, p.num_frames, p.fps, config.size) for p in all_plans]
    sizes = _write_videos(jobs, workers)
    bytes_by_split: Counter[str] = Counter()
    for plan, size in zip(all_plans, sizes, strict=True):
        bytes_by_split[plan.split] += size
    for split in SPLITS:
        lines = [json.dumps(r, ensure_ascii=False) for p in plans[split] for r in plan_records(p)]
        (out / f"{split}.jsonl").write_text(
            "".join(line + "\n" for line in lines), encoding="utf-8"
        )
    manifest = build_manifest(config, plans, bytes_by_split)
    # Written last: its presence marks a complete output directory.
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _prepare_output(out: Path, overwrite: bool) -> None:
    ours = [out / "manifest.json", *(out / f"{split}.jsonl" for split in SPLITS)]
    videos = out / "videos"
    old_videos = (
        [p for p in videos.iterdir() if _OWN_VIDEO.match(p.name)] if videos.is_dir() else []
    )
    existing = [p for p in ours if p.exists()] + old_videos
    if existing and not overwrite:
        raise SynthError(
            f"{out} already holds synthetic data ({existing[0].name}, ...); "
            "pass --overwrite to replace it or choose another directory"
        )
    for path in existing:
        path.unlink()
    videos.mkdir(parents=True, exist_ok=True)


def _write_one(job: tuple[str, tuple[TimedScene, ...], int, float, int]) -> int:
    return write_scene_video(*job)


def _write_videos(jobs: list[tuple[Any, ...]], workers: int) -> list[int]:
    if workers <= 1 or len(jobs) < 2:
        return [_write_one(job) for job in jobs]
    from concurrent.futures import ProcessPoolExecutor

    # Each video depends only on its own plan, so parallel output is identical.
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_write_one, jobs, chunksize=8))


def build_manifest(
    config: SynthConfig, plans: dict[str, list[VideoPlan]], bytes_by_split: Counter[str]
) -> dict[str, Any]:
    from longrl import __version__

    low, high = config.scene_range()
    parameters = asdict(config)
    parameters["kinds"] = list(config.resolved_kinds())
    parameters["scenes_per_video"] = [low, high]
    return {
        "generator": "longrl synth",
        "longrl_version": __version__,
        "seed": config.seed,
        "parameters": parameters,
        "palette": {name: list(PALETTE[name]) for name in palette_names(config.num_colors)},
        "kind_level": {k: KIND_LEVEL[k] for k in config.resolved_kinds()},
        "encoder": encoder_description(),
        "splits": {
            split: _split_summary(split, plans[split], bytes_by_split[split]) for split in SPLITS
        },
    }


def _split_summary(split: str, plans: list[VideoPlan], video_bytes: int) -> dict[str, Any]:
    questions = [q for p in plans for q in p.questions]
    frames = [p.num_frames for p in plans]
    return {
        "file": f"{split}.jsonl",
        "records": len(questions),
        "with_reasoning": sum(q.reasoning is not None for q in questions),
        "videos": len(plans),
        "kinds": _histogram(q.kind for q in questions),
        "answers": _histogram(q.answer_letter for q in questions),
        "scenes_per_video": _histogram(str(len(p.scenes)) for p in plans),
        "frames": {
            "min": min(frames, default=0),
            "max": max(frames, default=0),
            "total": sum(frames),
        },
        "video_seconds": round(sum(p.num_frames / p.fps for p in plans), 3),
        "video_bytes": video_bytes,
    }


def _histogram(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))
