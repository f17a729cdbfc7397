"""`longrl export CKPT OUT`: write a training checkpoint as a Hugging Face model directory."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoints/step_N directory, or a run directory")
    parser.add_argument("out", help="new directory for the Hugging Face checkpoint")


def run(args: argparse.Namespace) -> int:
    from longrl.train.export import export_hf

    try:
        out = export_hf(args.checkpoint, args.out)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"longrl export: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0
