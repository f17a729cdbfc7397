"""`longrl synth OUT`: write synthetic long-video reasoning data (videos + records)."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults mirror longrl.data.synth.SynthConfig (kept literal so --help imports nothing).
    parser.add_argument("out", help="output directory (videos/, sft|rl|eval.jsonl, manifest.json)")
    parser.add_argument("--seed", type=int, default=0, help="same seed -> identical data (0)")
    parser.add_argument("--num-sft", type=int, default=256, help="SFT records (256)")
    parser.add_argument("--num-rl", type=int, default=128, help="RL records (128)")
    parser.add_argument("--num-eval", type=int, default=64, help="eval records (64)")
    parser.add_argument("--min-frames", type=int, default=16, help="shortest video (16)")
    parser.add_argument("--max-frames", type=int, default=4096, help="longest video (4096)")
    parser.add_argument("--size", type=int, default=56, help="frame width = height, even (56)")
    parser.add_argument("--fps", type=float, default=4.0, help="video frame rate (4)")
    parser.add_argument(
        "--difficulty",
        choices=["easy", "medium", "hard"],
        default="medium",
        help="scenes per video and question kinds: easy 2-5 scenes, 4 kinds; "
        "medium 3-6, all kinds; hard 4-8, all kinds (medium)",
    )
    parser.add_argument(
        "--kinds",
        default=None,
        help="comma-separated question kinds to use instead of the difficulty's "
        "(first,last,after,before,count,distinct,longest,earliest)",
    )
    parser.add_argument(
        "--sft-kind-weights",
        default=None,
        help="how often the SFT split (the reasoning annotations) asks each kind, e.g. "
        "'last=0.02,count=0': weight relative to the other kinds (1 if not named, 0 leaves "
        "it out); the rl and eval splits do not change (default: all kinds evenly)",
    )
    parser.add_argument(
        "--slots",
        type=int,
        default=8,
        help="scene boundaries lie on this many equal parts of each video; sampling "
        "2*slots frames uniformly sees every scene (8)",
    )
    parser.add_argument("--colors", type=int, default=6, help="palette size, 4-8 (6)")
    parser.add_argument(
        "--questions-per-video", type=int, default=1, help="records per video, distinct kinds (1)"
    )
    parser.add_argument(
        "--reasoning",
        choices=["timed", "timeline"],
        default="timed",
        help="reasoning annotations: scenes with their start/end seconds, or the colour of "
        "each slot in order (timed)",
    )
    parser.add_argument(
        "--sft-reasoning-shares",
        default=None,
        help="share of a kind's SFT records that carry the reasoning annotation, e.g. "
        "'last=0.25' (1 if not named); the others are bare letter answers (train them with "
        "sft.missing_reasoning=empty_think); rl and eval do not change (default: all 1)",
    )
    parser.add_argument(
        "--sft-answer",
        choices=["letter", "text"],
        default="letter",
        help="what the SFT split's <answer> holds: the option letter or the option text; "
        "rl/eval records always hold the letter (letter)",
    )
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="video-writing processes"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace data already in OUT")


def run(args: argparse.Namespace) -> int:
    import time

    from longrl.data.synth import SynthConfig, SynthError, write_dataset

    kinds = _kind_list(args.kinds)
    config = SynthConfig(
        seed=args.seed,
        num_sft=args.num_sft,
        num_rl=args.num_rl,
        num_eval=args.num_eval,
        min_frames=args.min_frames,
        max_frames=args.max_frames,
        size=args.size,
        fps=args.fps,
        difficulty=args.difficulty,
        slots=args.slots,
        num_colors=args.colors,
        questions_per_video=args.questions_per_video,
        kinds=kinds,
        sft_kind_weights=_kind_weights(args.sft_kind_weights),
        reasoning=args.reasoning,
        sft_reasoning_shares=_kind_weights(args.sft_reasoning_shares, "--sft-reasoning-shares"),
        sft_answer=args.sft_answer,
    )
    started = time.perf_counter()
    try:
        manifest = write_dataset(args.out, config, workers=args.workers, overwrite=args.overwrite)
    except SynthError as exc:
        print(f"longrl synth: error: {exc}")
        return 2
    elapsed = time.perf_counter() - started
    for split, info in manifest["splits"].items():
        print(
            f"{split:>5}: {info['records']} records, {info['videos']} videos, "
            f"{info['frames']['total']} frames, {info['video_bytes'] / 1e6:.2f} MB  "
            f"kinds {info['kinds']}  answers {info['answers']}"
        )
    print(f"wrote {args.out} in {elapsed:.1f}s")
    return 0


def _kind_list(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(k.strip() for k in text.split(",") if k.strip())


def _kind_weights(text: str | None, flag: str = "--sft-kind-weights") -> dict[str, float] | None:
    if text is None:
        return None
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, value = item.partition("=")
        try:
            weights[kind.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise SystemExit(f"longrl synth: error: {flag} item {item!r} is not KIND=VALUE")
    return weights
