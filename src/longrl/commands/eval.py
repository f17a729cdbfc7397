"""`longrl eval MODEL_OR_CKPT DATA`: accuracy of a model, training checkpoint or run on a dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="Hugging Face model directory, training checkpoint (run/checkpoints/step_N) "
        "or run directory (its latest checkpoint)",
    )
    parser.add_argument("data", help="records to evaluate on (.jsonl, .json or .parquet)")
    parser.add_argument(
        "--out",
        default=None,
        help="output directory for report.json and predictions.jsonl "
        "(default: evals/<model name>-<data name>)",
    )
    parser.add_argument(
        "--thinking",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="thinking prompt (<think>..</think><answer>..</answer>) or answer-only "
        "(default: the training run's setting, else thinking)",
    )
    parser.add_argument("--k", type=int, default=1, help="report pass@k (default 1)")
    parser.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="responses per question for the pass@k estimate, >= k (default k)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sampling temperature; 0 = greedy (default 0 for one response, 1.0 for several)",
    )
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default 1)")
    parser.add_argument("--top-k", type=int, default=-1, help="top-k sampling, -1 = off")
    parser.add_argument("--batch-size", type=int, default=4, help="questions per batch (4)")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="tokens per response (default: the run's data.max_response_length, else 256)",
    )
    parser.add_argument(
        "--max-samples", type=int, default=None, help="evaluate only the first M records"
    )
    parser.add_argument(
        "--video-root",
        default=None,
        help="directory relative video paths are resolved against (default: the data file's)",
    )
    frames = parser.add_mutually_exclusive_group()
    frames.add_argument("--fps", type=float, default=None, help="frames sampled per second")
    frames.add_argument(
        "--num-frames", type=int, default=None, help="sample exactly N frames per video"
    )
    parser.add_argument("--max-frames", type=int, default=None, help="most frames per video")
    parser.add_argument("--min-pixels", type=int, default=None, help="min pixels per frame")
    parser.add_argument("--max-pixels", type=int, default=None, help="max pixels per frame")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the model runs: auto = cuda:0 when CUDA is available, else cpu (auto)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def default_out_dir(model: str, data: str) -> Path:
    model_path = Path(model).resolve()
    name = model_path.name
    if name.startswith("step_"):  # run/checkpoints/step_N -> run-step_N
        name = f"{model_path.parent.parent.name}-{name}"
    return Path("evals") / f"{name}-{Path(data).stem}"


def data_overrides(args: argparse.Namespace) -> dict:
    names = ("fps", "num_frames", "max_frames", "min_pixels", "max_pixels")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def run(args: argparse.Namespace) -> int:
    from longrl.eval import EvalError, evaluate
    from longrl.eval.report import format_table
    from longrl.logging_setup import setup_logging
    from longrl.models.load import CheckpointError

    setup_logging()
    for label, path in (("model", args.model), ("data", args.data)):
        if not Path(path).exists():
            print(f"longrl eval: {label} path {path!r} not found", file=sys.stderr)
            return 2
    out = Path(args.out) if args.out else default_out_dir(args.model, args.data)
    try:
        report = evaluate(
            args.model,
            args.data,
            out_dir=out,
            video_root=args.video_root,
            thinking=args.thinking,
            k=args.k,
            num_samples=args.num_samples,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            max_samples=args.max_samples,
            seed=args.seed,
            data_overrides=data_overrides(args),
            progress=not args.no_progress,
            device=args.device,
        )
    except (EvalError, CheckpointError) as err:
        print(f"longrl eval: {err}", file=sys.stderr)
        return 2
    print(format_table(report))
    return 0
