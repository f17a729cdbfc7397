"""`longrl rl RECIPE [key=value ...]`: RL training (GRPO, DAPO, REINFORCE++, RLOO, Dr.GRPO)."""

from __future__ import annotations

import argparse

from longrl.commands.recipe_args import add_recipe_arguments, resolve_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from longrl.config import dump_config

    config = resolve_config(args)
    if config is None:
        return 2
    if args.print_config:
        print(dump_config(config), end="")
        return 0
    from longrl.logging_setup import setup_logging
    from longrl.train.rl import run_rl

    setup_logging()
    run_dir = run_rl(config)
    print(f"run directory: {run_dir}")
    return 0
