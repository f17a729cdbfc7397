"""`longrl <command>`: a thin dispatcher.

Only the chosen command's module is imported, and command modules import
torch/transformers inside `run`, so `longrl --help` and `longrl X --help`
stay instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module under longrl.commands, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "video": ("video", "Probe a video and print the sampled frame indices/timestamps as JSON."),
    "synth": ("synth", "Write synthetic long-video reasoning data (videos + records)."),
    "tiny-model": ("tiny_model", "Build the offline tiny Qwen2.5-VL / Qwen2 checkpoint directory."),
    "inspect": ("inspect", "Show the resolved model input of one dataset record."),
    "config": ("config", "Validate a recipe with overrides and print the resolved config."),
    "sft": ("sft", "Chain-of-thought SFT from a recipe."),
    "rl": ("rl", "RL training from a recipe (GRPO, DAPO, REINFORCE++, RLOO, Dr.GRPO)."),
    "eval": ("eval", "Evaluate a model or checkpoint on a dataset (accuracy, pass@k, format)."),
    "export": ("export", "Write a training checkpoint as a Hugging Face model directory."),
    "quickstart": ("quickstart", "Run the end-to-end demo on the tiny model and synthetic data."),
    "cache": ("cache", "Encode every video of a recipe's dataset into the embedding cache."),
}


def _top_level_parser() -> argparse.ArgumentParser:
    lines = [f"  {name:<12} {summary}" for name, (_, summary) in COMMANDS.items()]
    parser = argparse.ArgumentParser(
        prog="longrl",
        description="RL for vision-language models on long videos.",
        epilog="commands:\n" + "\n".join(lines) + "\n\nRun `longrl <command> --help` for details.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="command")
    parser.add_argument("--version", action="version", version=_version())
    return parser


def _version() -> str:
    from longrl import __version__

    return f"longrl {__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _top_level_parser().parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(f"longrl.commands.{COMMANDS[name][0]}")
    parser = argparse.ArgumentParser(prog=f"longrl {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_intermixed_args(rest)  # options may sit between overrides
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
