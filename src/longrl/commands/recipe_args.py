"""The arguments every recipe-driven command shares: RECIPE [key=value ...] [--print-config]."""

from __future__ import annotations

import argparse
import sys


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="YAML recipe (omit to start from defaults)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides, e.g. worker.rollout.n=8 data.fps=1",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )


def resolve_config(args: argparse.Namespace, schema=None):
    """Load + validate; on a bad config print the reason and return None (exit code 2)."""
    from longrl.config import ConfigError, RunConfig, load_config

    recipe, overrides = args.recipe, list(args.overrides)
    # `longrl rl a=b` (no recipe) : argparse puts the first override in `recipe`.
    if recipe is not None and "=" in recipe and not recipe.endswith((".yaml", ".yml")):
        recipe, overrides = None, [recipe, *overrides]
    try:
        return load_config(recipe, overrides, schema or RunConfig)
    except ConfigError as err:
        print(f"longrl: {err}", file=sys.stderr)
        return None
