"""`longrl quickstart`: the whole method on a CPU — data, tiny model, SFT, RL, eval."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="run directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--short",
        action="store_true",
        help="a few steps of every stage (checks the pipeline; learns nothing)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change one setting of the recipe (a field of longrl.quickstart.plan."
        'QuickstartPlan; VALUE is JSON, e.g. num_sft=1024 or kinds=\'["first","last"]\'); '
        "repeatable, applied after --short",
    )


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from longrl.logging_setup import setup_logging
    from longrl.quickstart.pipeline import format_table, run_quickstart
    from longrl.quickstart.plan import PlanOverrideError, QuickstartPlan, apply_overrides

    setup_logging()
    plan = replace(QuickstartPlan(), seed=args.seed)
    if args.short:
        plan = plan.shortened()
    try:
        plan = apply_overrides(plan, args.overrides)
    except PlanOverrideError as error:
        print(f"longrl quickstart: {error}")
        return 2
    summary = run_quickstart(args.out, plan)
    print()
    print(format_table(summary), end="")
    print(f"plots: {', '.join(summary['plots'])}")
    print(f"summary: {args.out}/summary.json")
    return 0
