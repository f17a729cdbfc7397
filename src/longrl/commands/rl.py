"""`longrl rl RECIPE [key=value ...] [--nproc N]`: RL training (GRPO, DAPO, REINFORCE++, RLOO, Dr.GRPO).

One process by default. `--nproc N` starts N processes on this machine through
torchrun (`python -m torch.distributed.run --standalone`) with the same
arguments; for several machines launch `torchrun ... -m longrl.cli rl ...`
on each (see docs/distributed.md and scripts/slurm_longrl.sh).
"""

from __future__ import annotations

import argparse
import os
import sys

from longrl.commands.recipe_args import add_recipe_arguments, resolve_config

# Set by torchrun in every process it starts.
_LAUNCHED = "TORCHELASTIC_RUN_ID"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="processes on this machine (torchrun --standalone --nproc-per-node N); "
        "worker.actor.ulysses_sequence_parallel_size of them share each sequence",
    )


def torchrun_command(args: argparse.Namespace) -> list[str]:
    """The command that reruns this `longrl rl` (recipe and overrides) in torchrun workers."""
    rest = ([args.recipe] if args.recipe else []) + list(args.overrides)
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={args.nproc}",
        "-m",
        "longrl.cli",
        "rl",
        *rest,
    ]


def run(args: argparse.Namespace) -> int:
    from longrl.config import dump_config

    config = resolve_config(args)
    if config is None:
        return 2
    if args.print_config:
        print(dump_config(config), end="")
        return 0
    if args.nproc < 1:
        print(f"longrl rl: --nproc must be >= 1, got {args.nproc}", file=sys.stderr)
        return 2
    if args.nproc > 1 and _LAUNCHED not in os.environ:
        import subprocess

        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        return subprocess.call(torchrun_command(args), env=env)
    from longrl.logging_setup import setup_logging
    from longrl.train.rl import run_rl

    setup_logging()
    rank = os.environ.get("RANK")
    try:
        run_dir = run_rl(config)
    except Exception as err:
        if rank is None:
            raise
        # Every rank says who it is and why it stops; torchrun reports the exit codes.
        import traceback

        traceback.print_exc()
        print(f"longrl rl: rank {rank} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if rank in (None, "0"):
        print(f"run directory: {run_dir}")
    return 0
