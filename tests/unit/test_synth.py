"""Synthetic long-video data: determinism, disjoint splits, balance, correct answers,
reasoning that cites the real scene boundaries, videos whose pixels show the scenes."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from longrl.cli import main as cli_main
from longrl.data.dataset import load_dataset
from longrl.data.synth import (
    SPLITS,
    SynthConfig,
    SynthError,
    plan_dataset,
    plan_records,
    write_dataset,
)
from longrl.data.synth_questions import KINDS, attainable_numbers, number_options
from longrl.data.synth_scenes import (
    PALETTE,
    draw_scenes,
    palette_names,
    place_scenes,
    slot_start_frames,
)
from longrl.rewards.answer import gold_choice

SMALL = SynthConfig(
    seed=3, num_sft=16, num_rl=8, num_eval=8, min_frames=16, max_frames=40, size=32, fps=4.0
)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, SMALL)
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def all_records(out: Path) -> dict[str, list[dict]]:
    return {split: read_jsonl(out / f"{split}.jsonl") for split in SPLITS}


def chosen(record: dict) -> str:
    """The option text the answer letter points at."""
    letter = re.fullmatch(r"<answer>([ABCD])</answer>", record["answer"]).group(1)
    return record["options"]["ABCD".index(letter)].split(". ", 1)[1]


def expected_answer(record: dict) -> str:
    """An independent oracle: the right answer computed from the scene list."""
    colors = [s["color"] for s in record["scenes"]]
    question = record["problem"].splitlines()[0]
    options = [o.split(". ", 1)[1] for o in record["options"]]
    kind = record["problem_type"]
    if kind == "first":
        return colors[0]
    if kind == "last":
        return colors[-1]
    if kind in ("after", "before"):
        anchor = re.search(r"the (\w+) scene", question).group(1)
        assert colors.count(anchor) == 1
        i = colors.index(anchor)
        return colors[i + 1] if kind == "after" else colors[i - 1]
    if kind == "count":
        return str(colors.count(re.search(r"separate (\w+) scenes", question).group(1)))
    if kind == "distinct":
        return str(len(set(colors)))
    if kind == "longest":
        totals = Counter()
        for s in record["scenes"]:
            totals[s["color"]] += s["end_frame"] - s["start_frame"]
        (best, most), (_, second) = totals.most_common(2)
        assert most - second >= record["video_frames"] // 8  # wins by a whole slot (of 8)
        return best
    if kind == "earliest":
        assert colors[0] not in options
        return min((o for o in options if o in colors), key=colors.index)
    raise AssertionError(kind)


def test_same_seed_gives_byte_identical_records_and_videos(written: Path, tmp_path: Path) -> None:
    write_dataset(tmp_path, SMALL, workers=2)  # parallel writing must not change a byte
    for name in [f"{split}.jsonl" for split in SPLITS] + ["manifest.json"]:
        assert (written / name).read_bytes() == (tmp_path / name).read_bytes(), name
    videos = sorted(p.name for p in (written / "videos").iterdir())
    assert videos == sorted(p.name for p in (tmp_path / "videos").iterdir())
    for name in videos:
        digest = [
            hashlib.sha256((d / "videos" / name).read_bytes()).digest() for d in (written, tmp_path)
        ]
        assert digest[0] == digest[1], name
    other = plan_dataset(SynthConfig(**{**SMALL.__dict__, "seed": 4}))
    assert other["sft"][0].scenes != plan_dataset(SMALL)["sft"][0].scenes


def test_splits_share_no_video_and_no_scene_sequence() -> None:
    config = SynthConfig(seed=1, num_sft=300, num_rl=150, num_eval=150, max_frames=64)
    plans = plan_dataset(config)
    seen_files, seen_sequences = set(), set()
    for split in SPLITS:
        files = {p.file for p in plans[split]}
        sequences = {tuple((s.color, s.slots) for s in p.scenes) for p in plans[split]}
        assert len(sequences) == len(plans[split])  # distinct within the split too
        assert not files & seen_files and not sequences & seen_sequences
        seen_files |= files
        seen_sequences |= sequences


def test_eval_split_does_not_depend_on_the_other_split_sizes() -> None:
    small = plan_dataset(SynthConfig(seed=5, num_sft=4, num_rl=4, num_eval=16, max_frames=64))
    large = plan_dataset(SynthConfig(seed=5, num_sft=40, num_rl=9, num_eval=16, max_frames=64))
    assert small["eval"] == large["eval"]


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_kinds_letters_and_numeric_answers_are_balanced(difficulty: str) -> None:
    config = SynthConfig(
        seed=2, num_sft=96, num_rl=0, num_eval=0, max_frames=64, difficulty=difficulty
    )
    questions = [q for p in plan_dataset(config)["sft"] for q in p.questions]
    kinds = Counter(q.kind for q in questions)
    assert len(set(kinds.values())) == 1 and len(kinds) == len(config.resolved_kinds())
    per_kind = len(questions) // len(kinds)
    for kind in kinds:  # every kind spreads its answers evenly over A-D
        letters = Counter(q.answer_letter for q in questions if q.kind == kind)
        assert sorted(letters) == list("ABCD")
        assert max(letters.values()) - min(letters.values()) <= 1, (kind, letters)
        assert sum(letters.values()) == per_kind


def test_numeric_options_are_fixed_and_reachable() -> None:
    assert number_options("count", 6, 6) == (0, 1, 2, 3)
    assert number_options("distinct", 6, 6) == (3, 4, 5, 6)
    assert number_options("distinct", 4, 6) == (2, 3, 4, 5)
    assert attainable_numbers("distinct", 4, 6) == (2, 3, 4)
    assert attainable_numbers("count", 4, 6) == (0, 1, 2)  # 3 needs 5 scenes: X.X.X
    assert attainable_numbers("count", 5, 6) == (0, 1, 2, 3)


def test_every_answer_is_right_and_reasoning_cites_the_scene_boundaries() -> None:
    config = SynthConfig(seed=7, num_sft=48, num_rl=16, num_eval=16, max_frames=300, fps=3.0)
    scene_line = re.compile(r"(\d+\.\d)s-(\d+\.\d)s (\w+)\.")
    for plan in (p for split in SPLITS for p in plan_dataset(config)[split]):
        for record in plan_records(plan):
            assert chosen(record) == expected_answer(record), record["problem_id"]
            reasoning = record["reasoning"]
            cited = scene_line.findall(reasoning)
            assert len(cited) == len(record["scenes"])
            for (start, end, color), scene in zip(cited, record["scenes"], strict=True):
                assert color == scene["color"]
                assert abs(float(start) - scene["start_frame"] / 3.0) <= 0.05 + 1e-9
                assert abs(float(end) - scene["end_frame"] / 3.0) <= 0.05 + 1e-9
            letter = record["answer"][len("<answer>")]
            assert reasoning.endswith(f"Therefore the answer is {letter}.")
            assert len(reasoning) < 400  # short enough for a tiny model to write


def test_videos_decode_to_the_planned_frames_and_colours(written: Path) -> None:
    records = read_jsonl(written / "eval.jsonl") + read_jsonl(written / "rl.jsonl")[:2]
    for record in records:
        with av.open(str(written / record["videos"][0])) as container:
            stream = container.streams.video[0]
            assert stream.average_rate == 4
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert len(frames) == record["video_frames"]
        assert frames[0].shape == (SMALL.size, SMALL.size, 3)
        for scene in record["scenes"]:
            want = np.array(PALETTE[scene["color"]])
            for frame in frames[scene["start_frame"] : scene["end_frame"]]:
                assert np.abs(frame.astype(int) - want).max() <= 6, record["problem_id"]


def test_records_load_with_the_reader(written: Path) -> None:
    for split in SPLITS:
        samples, report = load_dataset(written / f"{split}.jsonl")
        assert report.total_skipped == 0 and len(samples) == SMALL.split_size(split)
        for sample in samples:
            assert sample.prompt.startswith("<video>") and sample.prompt.count("<video>") == 1
            assert sample.answer in "ABCD" and len(sample.answer) == 1
            assert Path(sample.videos[0]).is_file()
            assert sample.problem_type in KINDS and sample.data_type == "video"
            assert sample.reasoning and sample.extra["scenes"]
            assert sample.fps is None and sample.num_frames is None  # no sampling overrides


def test_manifest_counts_match_the_records(written: Path) -> None:
    manifest = json.loads((written / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["parameters"]["max_frames"] == 40
    assert manifest["encoder"]["codec"] == "libx264"
    for split, records in all_records(written).items():
        info = manifest["splits"][split]
        assert info["records"] == len(records) == SMALL.split_size(split)
        assert info["kinds"] == dict(sorted(Counter(r["problem_type"] for r in records).items()))
        assert sum(info["answers"].values()) == len(records)
        frames = [r["video_frames"] for r in records]
        assert info["frames"] == {"min": min(frames), "max": max(frames), "total": sum(frames)}
        assert min(frames) >= 16 and max(frames) <= 40
        assert info["video_bytes"] == sum(
            (written / r["videos"][0]).stat().st_size for r in records
        )


def test_scene_layout_is_exact() -> None:
    assert slot_start_frames(20, 8) == [0, 3, 5, 8, 10, 13, 15, 18, 20]
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 8)
        scenes = draw_scenes(rng, n, 8, palette_names(6))
        assert len(scenes) == n and sum(s.slots for s in scenes) == 8
        assert all(a.color != b.color for a, b in itertools.pairwise(scenes))
        frames = rng.randint(8, 500)
        placed = place_scenes(scenes, frames, 2.0)
        assert placed[0].start_frame == 0 and placed[-1].end_frame == frames
        assert all(a.end_frame == b.start_frame for a, b in itertools.pairwise(placed))


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(SynthError, match="min_frames"):
        SynthConfig(min_frames=4, slots=8).validate()
    with pytest.raises(SynthError, match="size"):
        SynthConfig(size=33).validate()
    with pytest.raises(SynthError, match="unknown question kinds"):
        SynthConfig(kinds=("first", "bogus")).validate()
    with pytest.raises(SynthError, match="num_colors"):
        SynthConfig(num_colors=3).validate()
    # 2 slots and 4 colours allow only a handful of distinct scene sequences.
    tiny = SynthConfig(num_sft=50, num_rl=0, num_eval=0, slots=2, min_frames=2, num_colors=4)
    with pytest.raises(SynthError, match="could not draw"):
        plan_dataset(tiny)


def test_cli_writes_refuses_to_overwrite_and_handles_fractional_fps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["synth", str(tmp_path), "--num-sft", "2", "--num-rl", "1", "--num-eval", "1"]
    args += ["--max-frames", "24", "--fps", "2.5", "--difficulty", "easy", "--workers", "1"]
    assert cli_main(args) == 0
    assert "sft: 2 records" in capsys.readouterr().out
    record = read_jsonl(tmp_path / "eval.jsonl")[0]
    with av.open(str(tmp_path / record["videos"][0])) as container:
        assert container.streams.video[0].average_rate == 2.5
        assert sum(1 for _ in container.decode(video=0)) == record["video_frames"]
    assert record["video_fps"] == 2.5
    assert cli_main(args) == 2
    assert "--overwrite" in capsys.readouterr().out
    assert cli_main([*args, "--overwrite", "--seed", "9"]) == 0
    assert len(list((tmp_path / "videos").iterdir())) == 4  # the old videos were replaced


def color_at(scenes: list[dict], frame: int) -> str:
    return next(s["color"] for s in scenes if s["start_frame"] <= frame < s["end_frame"])


def test_timeline_reasoning_names_each_slot_and_changes_nothing_else() -> None:
    timed = SynthConfig(seed=7, num_sft=48, num_rl=16, num_eval=16, max_frames=300, fps=3.0)
    timeline = SynthConfig(**{**timed.__dict__, "reasoning": "timeline"})
    timed_plans, timeline_plans = plan_dataset(timed), plan_dataset(timeline)
    for split in SPLITS:
        for old, new in zip(timed_plans[split], timeline_plans[split], strict=True):
            assert old.scenes == new.scenes  # the style draws no random numbers
            for record, before in zip(plan_records(new), plan_records(old), strict=True):
                assert {k: v for k, v in record.items() if k != "reasoning"} == {
                    k: v for k, v in before.items() if k != "reasoning"
                }
                assert chosen(record) == expected_answer(record)
                reasoning = record["reasoning"]
                listed = re.fullmatch(r"The video: ([a-z ]+)\. .*", reasoning).group(1).split()
                bounds = slot_start_frames(record["video_frames"], timed.slots)
                by_slot = [color_at(record["scenes"], frame) for frame in bounds[:-1]]
                assert listed == by_slot
                assert not re.search(r"\d\.\ds", reasoning)  # no seconds cited
                letter = record["answer"][len("<answer>")]
                # The option text right before its letter.
                assert reasoning.endswith(f"Therefore the answer is {chosen(record)} {letter}.")
                if record["problem_type"] == "longest":
                    totals = dict(re.findall(r"(\w+) (\d+)", reasoning.split("In total: ")[1]))
                    assert {c: int(v) for c, v in totals.items()} == Counter(by_slot)
    with pytest.raises(SynthError, match="reasoning"):
        SynthConfig(reasoning="bogus").validate()


def test_text_answers_change_only_the_sft_targets() -> None:
    letters = SynthConfig(seed=5, num_sft=40, num_rl=16, num_eval=16, reasoning="timeline")
    texts = SynthConfig(**{**letters.__dict__, "sft_answer": "text"})
    letter_plans, text_plans = plan_dataset(letters), plan_dataset(texts)
    for split in ("rl", "eval"):  # the scored splits are identical, record for record
        assert [plan_records(p) for p in text_plans[split]] == [
            plan_records(p) for p in letter_plans[split]
        ]
    for old, new in zip(letter_plans["sft"], text_plans["sft"], strict=True):
        for record, before in zip(plan_records(new), plan_records(old), strict=True):
            assert {k: v for k, v in record.items() if k not in ("answer", "reasoning")} == {
                k: v for k, v in before.items() if k not in ("answer", "reasoning")
            }
            text = chosen(before)  # the option text of the gold letter
            assert record["answer"] == f"<answer>{text}</answer>"
            # The shared extractor maps the text answer to the gold letter.
            assert gold_choice(record["answer"], record["options"]) == before["answer"][8]
            assert record["reasoning"].endswith(f"Therefore the answer is {text}.")
            assert (
                record["reasoning"].rsplit(" Therefore", 1)[0]
                == (before["reasoning"].rsplit(" Therefore", 1)[0])
            )
    with pytest.raises(SynthError, match="sft_answer"):
        SynthConfig(sft_answer="bogus").validate()


def test_sft_kind_weights_change_only_the_sft_split() -> None:
    even = SynthConfig(seed=5, num_sft=120, num_rl=24, num_eval=24, reasoning="timeline")
    weights = {"last": 0.25, "count": 0, "distinct": 0}
    weighted = SynthConfig(**{**even.__dict__, "sft_kind_weights": weights})
    even_plans, weighted_plans = plan_dataset(even), plan_dataset(weighted)
    for split in ("rl", "eval"):  # the scored splits do not change, record for record
        assert [plan_records(p) for p in weighted_plans[split]] == [
            plan_records(p) for p in even_plans[split]
        ]
        assert {q.kind for p in weighted_plans[split] for q in p.questions} == set(KINDS)
    counts = Counter(q.kind for p in weighted_plans["sft"] for q in p.questions)
    # 5 kinds of weight 1 and `last` at 1/4: 120 / 5.25 = 22.9 each, `last` 5.7.
    assert counts["last"] in (5, 6)
    assert set(counts) == set(KINDS) - {"count", "distinct"}
    assert all(22 <= counts[k] <= 24 for k in counts if k != "last")
    for bad in ({"bogus": 1.0}, {"last": -1.0}, dict.fromkeys(KINDS, 0.0)):
        with pytest.raises(SynthError, match="sft_kind_weights"):
            SynthConfig(sft_kind_weights=bad).validate()


def test_cli_parses_sft_kind_weights(tmp_path: Path) -> None:
    from longrl.commands.synth import _kind_weights

    assert _kind_weights("last=0.02, count=0") == {"last": 0.02, "count": 0.0}
    with pytest.raises(SystemExit, match="KIND=VALUE"):
        _kind_weights("last")
    with pytest.raises(SystemExit, match="--sft-reasoning-shares item 'x'"):
        _kind_weights("x", "--sft-reasoning-shares")


def test_sft_reasoning_shares_make_bare_letter_records_and_change_nothing_else() -> None:
    full = SynthConfig(
        seed=5, num_sft=120, num_rl=24, num_eval=24, reasoning="timeline", sft_answer="text"
    )
    partial = SynthConfig(**{**full.__dict__, "sft_reasoning_shares": {"last": 0.25, "first": 0}})
    full_plans, partial_plans = plan_dataset(full), plan_dataset(partial)
    for split in ("rl", "eval"):
        assert [plan_records(p) for p in partial_plans[split]] == [
            plan_records(p) for p in full_plans[split]
        ]
    with_reasoning: Counter[str] = Counter()
    per_kind: Counter[str] = Counter()
    for old, new in zip(full_plans["sft"], partial_plans["sft"], strict=True):
        for record, before in zip(plan_records(new), plan_records(old), strict=True):
            per_kind[record["problem_type"]] += 1
            if "reasoning" in record:
                with_reasoning[record["problem_type"]] += 1
                assert record == before
                continue
            # The same question, no annotation, and the gold letter as the answer.
            letter = gold_choice(before["answer"], before["options"])
            assert record["answer"] == f"<answer>{letter}</answer>"
            assert {k: v for k, v in record.items() if k != "answer"} == {
                k: v for k, v in before.items() if k not in ("answer", "reasoning")
            }
    # 120 records over 8 kinds: 15 each; `last` keeps round(0.25 * 15) = 4 annotations.
    assert per_kind == dict.fromkeys(KINDS, 15)
    assert with_reasoning == {**dict.fromkeys(set(KINDS) - {"first"}, 15), "last": 4}
    # Its own random stream: another seed picks other records.
    other = plan_dataset(SynthConfig(**{**partial.__dict__, "seed": 6}))["sft"]
    kept = {q.question for p in partial_plans["sft"] for q in p.questions if q.reasoning}
    assert kept != {q.question for p in other for q in p.questions if q.reasoning}
    for bad in ({"last": -0.1}, {"last": 1.5}, {"bogus": 0.5}):
        with pytest.raises(SynthError, match="sft_reasoning_shares"):
            SynthConfig(sft_reasoning_shares=bad).validate()


def test_manifest_counts_records_with_reasoning(tmp_path: Path) -> None:
    config = SynthConfig(
        seed=2,
        num_sft=16,
        num_rl=4,
        num_eval=4,
        max_frames=32,
        sft_reasoning_shares=dict.fromkeys(KINDS, 0.5),
    )
    manifest = write_dataset(tmp_path / "d", config)
    assert manifest["splits"]["sft"]["with_reasoning"] == 8
    assert manifest["splits"]["rl"]["with_reasoning"] == 4
    records = [json.loads(line) for line in (tmp_path / "d" / "sft.jsonl").read_text().splitlines()]
    assert sum("reasoning" in r for r in records) == 8
