"""`longrl config RECIPE [overrides]`: validate and print the resolved config."""

from __future__ import annotations

import argparse

from longrl.commands.recipe_args import add_recipe_arguments, resolve_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)
    parser.add_argument(
        "--reference", action="store_true", help="print the Markdown reference of every key"
    )


def run(args: argparse.Namespace) -> int:
    from longrl.config import RunConfig, dump_config

    if args.reference:
        from longrl.config.reference import config_reference

        print(config_reference(RunConfig), end="")
        return 0
    config = resolve_config(args)
    if config is None:
        return 2
    print(dump_config(config), end="")
    return 0
