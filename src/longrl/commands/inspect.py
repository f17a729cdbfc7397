"""`longrl inspect MODEL DATA [--row N]`: the exact model input one record turns into.

Shows what rollout and training will see: the rendered prompt, the sampled
frames and their timestamps, the vision grid and token count, and the 3-D
positions around each video (where the text after it resumes). Loads the
model's config and processor only, not its weights.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="local checkpoint directory")
    parser.add_argument("data", help="records file (.jsonl, .json, .parquet)")
    parser.add_argument("--row", type=int, default=1, help="1-based record number (default 1)")
    parser.add_argument("--video-root", default=None)
    parser.add_argument("--fps", type=float, default=None)
    parser.add_argument("--num-frames", type=int, default=None)
    parser.add_argument("--max-frames", type=int, default=768)
    parser.add_argument("--no-thinking", action="store_true", help="answer-only template")


def run(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    from longrl.config.data import DataConfig
    from longrl.data.dataset import iter_dataset
    from longrl.data.records import RecordError
    from longrl.models.inputs import build_prompt_batch
    from longrl.models.load import CheckpointError, load_processor
    from longrl.train.prompts import decode_clips
    from longrl.video.errors import VideoError

    try:
        data = DataConfig(
            fps=None if args.num_frames else (args.fps or 2.0),
            num_frames=args.num_frames,
            max_frames=args.max_frames,
            thinking=not args.no_thinking,
        )
        processor = load_processor(args.model)
        config = AutoConfig.from_pretrained(args.model, local_files_only=True)
        sample = _nth(iter_dataset(args.data, args.video_root, on_error="raise"), args.row)
        clips = decode_clips(sample, data)
        model_input = build_prompt_batch(
            [sample], [clips], processor, config, thinking=data.thinking
        )
    except (CheckpointError, RecordError, VideoError, ValueError, OSError) as err:
        print(f"longrl inspect: {err}", file=sys.stderr)
        return 2
    print(json.dumps(describe(sample, clips, model_input, processor), indent=1))
    return 0


def _nth(samples, row: int):
    for index, sample in enumerate(samples, start=1):
        if index == row:
            return sample
    raise ValueError(f"the data file has fewer than {row} records")


def describe(sample, clips, model_input, processor) -> dict:
    ids = model_input.input_ids[0].tolist()
    positions = model_input.position_ids
    text = processor.tokenizer.decode(ids, skip_special_tokens=False)
    out = {
        "problem_id": sample.problem_id,
        "source": sample.source,
        "answer": sample.answer,
        "prompt_tokens": len(ids),
        "prompt_text": _collapse_pads(text, processor),
        "videos": [],
    }
    if model_input.video_grid_thw is None:
        return out
    video_token = processor.tokenizer.convert_tokens_to_ids(processor.video_token)
    is_video = [i == video_token for i in ids]
    blocks = _runs(is_video)
    for clip, grid, seconds, (start, end) in zip(
        clips,
        model_input.video_grid_thw.tolist(),
        model_input.second_per_grid_ts.tolist(),
        blocks,
        strict=True,
    ):
        block = positions[:, 0, start:end]
        out["videos"].append(
            {
                "frames": len(clip.frames),
                "frame_size": list(clip.frames.shape[1:3]),
                "sampled_fps": round(clip.fps, 4),
                "grid_thw": grid,
                "second_per_grid_t": seconds,
                "video_tokens": end - start,
                "token_span": [start, end],
                "positions_first": positions[:, 0, start].tolist(),
                "positions_max": block.max(dim=1).values.tolist(),
                "text_after_video_position": positions[:, 0, end].tolist()
                if end < len(ids)
                else None,
            }
        )
    return out


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _collapse_pads(text: str, processor) -> str:
    """`<|video_pad|>` x 4096 reads as `<|video_pad|>x4096`."""
    import re

    token = re.escape(processor.video_token)
    return re.sub(
        f"(?:{token})+",
        lambda m: f"{processor.video_token}x{m.group(0).count(processor.video_token)}",
        text,
    )
