"""`longrl sft RECIPE [key=value ...]`: chain-of-thought SFT (the stage before `longrl rl`)."""

from __future__ import annotations

import argparse

from longrl.commands.recipe_args import add_recipe_arguments, resolve_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from longrl.config import dump_config
    from longrl.config.sft import SftConfig

    config = resolve_config(args, SftConfig)
    if config is None:
        return 2
    if args.print_config:
        print(dump_config(config), end="")
        return 0
    from longrl.logging_setup import setup_logging
    from longrl.train.sft import run_sft

    setup_logging()
    run_dir = run_sft(config)
    print(f"run directory: {run_dir}")
    return 0
