"""`longrl cache RECIPE [key=value ...]`: encode every video of the dataset into data.cache_dir.

Takes an RL or an SFT recipe (the same one training will use, so the keys match):
its data.train_files (and data.val_files) are read, each distinct video and frame
request is encoded once by the recipe's model and stored. Rerun to resume after
a kill. Under torchrun (WORLD_SIZE > 1) the videos are split across ranks and
rank 0 prints the combined summary. Exit code 1 when videos failed and
data.on_bad_sample=raise, else 0.
"""

from __future__ import annotations

import argparse
import sys

from longrl.commands.recipe_args import add_recipe_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)
    parser.add_argument(
        "--verify",
        action="store_true",
        help="fully re-read entries already on disk (checksum, shape) and re-encode bad ones",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", metavar="PATH", help="also write the summary as JSON here")


def _load_recipe(args: argparse.Namespace):
    """(config, model section): the recipe read as an RL recipe, else as an SFT one."""
    from longrl.config import ConfigError, RunConfig, load_config
    from longrl.config.sft import SftConfig

    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and "=" in recipe and not recipe.endswith((".yaml", ".yml")):
        recipe, overrides = None, [recipe, *overrides]
    errors = []
    for schema in (RunConfig, SftConfig):
        try:
            config = load_config(recipe, overrides, schema)
        except ConfigError as err:
            errors.append(f"as {schema.__name__}: {err}")
            continue
        model = config.worker.actor.model if schema is RunConfig else config.model
        return config, model
    print(
        "longrl: the recipe is neither an RL nor an SFT recipe\n" + "\n".join(errors),
        file=sys.stderr,
    )
    return None, None


def run(args: argparse.Namespace) -> int:
    from longrl.config import dump_config

    config, model_cfg = _load_recipe(args)
    if config is None:
        return 2
    if args.print_config:
        print(dump_config(config), end="")
        return 0
    if config.data.cache_dir is None:
        print("longrl: data.cache_dir is not set: say where the cache goes", file=sys.stderr)
        return 2
    if not model_cfg.freeze_vision_tower:
        print(
            "longrl: data.cache_dir needs a frozen vision tower (freeze_vision_tower=true): "
            "cached embeddings would go stale as the ViT trains",
            file=sys.stderr,
        )
        return 2
    import json
    from pathlib import Path

    from longrl.logging_setup import setup_logging
    from longrl.vision.errors import EmbeddingCacheError
    from longrl.vision.precompute import combine_summaries, format_summary

    setup_logging()
    rank, world, owned = distributed_rank()
    try:
        summary = cache_dataset(
            config.data,
            model_cfg,
            rank,
            world,
            verify=args.verify,
            progress=not args.no_progress,
            device=config.trainer.device,
        )
        total = combine_summaries(summary)
    except EmbeddingCacheError as err:
        print(f"longrl: {err}", file=sys.stderr)
        return 2
    finally:
        if owned:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank == 0:
        print(format_summary(total, config.data.cache_dir, world))
        if args.json:
            Path(args.json).write_text(json.dumps(total.to_dict(), indent=2) + "\n")
    return 1 if total.failures and config.data.on_bad_sample == "raise" else 0


def distributed_rank() -> tuple[int, int, bool]:
    """(rank, world size, whether this call initialised the process group).

    Under torchrun (WORLD_SIZE > 1 in the environment) the default group is
    initialised from the environment (gloo: only small summaries travel).
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, False
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="gloo")
    return dist.get_rank(), dist.get_world_size(), owned


def cache_dataset(
    data, model_cfg, rank: int, world: int, *, verify: bool, progress: bool, device: str = "auto"
):
    """Encode this rank's share of the dataset's videos on `device` (trainer.device: "auto"
    is cuda:LOCAL_RANK when CUDA is available); its PrecomputeSummary."""
    import logging

    from longrl.data.dataset import load_dataset
    from longrl.devices import select_device
    from longrl.train.policy import load_policy
    from longrl.vision.cache import cache_for
    from longrl.vision.cached_encoder import CachedVideoEncoder
    from longrl.vision.precompute import precompute, shard, video_tasks

    samples = []
    for files in (data.train_files, data.val_files):
        if files:
            loaded, _ = load_dataset(
                files,
                data.video_root,
                on_error=data.on_bad_sample,
                prompt_key=data.prompt_key,
                answer_key=data.answer_key,
                video_key=data.video_key,
            )
            samples.extend(loaded)
    if not samples:
        raise ValueError("no records: set data.train_files (and/or data.val_files)")
    tasks = shard(video_tasks(samples, data), rank, world)
    logging.getLogger("longrl.vision").info(
        "rank %d/%d: %d videos to check or encode", rank, world, len(tasks)
    )
    policy = load_policy(model_cfg, data, device=select_device(device))
    policy.model.eval()
    cache = cache_for(
        policy.model, data.cache_dir, memory_bytes=0, on_mismatch=data.cache_on_mismatch
    )
    encoder = CachedVideoEncoder(policy.model, policy.processor, cache)
    return precompute(encoder, tasks, verify=verify, progress=progress)
