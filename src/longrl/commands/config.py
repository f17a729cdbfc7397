"""`longrl config RECIPE [overrides]`: validate and print the resolved config."""

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
    print(dump_config(config), end="")
    return 0
