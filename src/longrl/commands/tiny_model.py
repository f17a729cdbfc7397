"""`longrl tiny-model OUT [--kind qwen2_5_vl|qwen2] [--seed N]`: write the offline tiny checkpoint."""

from __future__ import annotations

import argparse

KINDS = ("qwen2_5_vl", "qwen2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="directory to write the checkpoint into (created if missing)")
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="qwen2_5_vl",
        help="tiny Qwen2.5-VL (video/image + text) or text-only Qwen2 (default: qwen2_5_vl)",
    )
    parser.add_argument("--seed", type=int, default=0, help="weight-init seed (default: 0)")


def run(args: argparse.Namespace) -> int:
    from longrl.models.load import load_model
    from longrl.models.tiny import build_tiny_checkpoint, count_parameters

    path = build_tiny_checkpoint(args.out, kind=args.kind, seed=args.seed)
    # Count from the reloaded directory: what users get is what is reported.
    parameters = count_parameters(load_model(path))
    print(f"{path.resolve()}\n{args.kind}: {parameters:,} parameters")
    return 0
