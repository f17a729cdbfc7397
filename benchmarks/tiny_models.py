"""What the benchmarks share: a scaled-up tiny Qwen2.5-VL and a one-video dataset (each built once)."""

from __future__ import annotations

import json
from pathlib import Path


def tiny_vl_model(
    out: Path,
    hidden: int,
    layers: int,
    vision_depth: int | None = None,
    vision_width: int | None = None,
) -> Path:
    """A Qwen2.5-VL checkpoint of `hidden` x `layers` under `out`, reused when present;
    the vision tower keeps the tiny kit's size unless `vision_depth`/`vision_width` say."""
    from longrl.models.tiny import build_tiny_checkpoint

    vision = {}
    name = f"model_h{hidden}_l{layers}"
    if vision_depth is not None and vision_width is not None:
        name += f"_vd{vision_depth}_vw{vision_width}"
        vision = {
            "vision_depth": vision_depth,
            "vision_hidden_size": vision_width,
            "vision_num_heads": max(2, vision_width // 32),
            "vision_intermediate_size": vision_width * 2,
        }
    model = out / name
    if not (model / "config.json").exists():
        build_tiny_checkpoint(
            model,
            kind="qwen2_5_vl",
            hidden_size=hidden,
            num_hidden_layers=layers,
            intermediate_size=hidden * 2,
            **vision,
        )
    return model


def bench_records(out: Path, frames: int, size: int) -> Path:
    """A `frames`-frame scene video at `size` px and a one-record dataset (built once)."""
    from longrl.data.synth_scenes import PALETTE, TimedScene
    from longrl.data.synth_video import write_scene_video

    data = out / f"data_f{frames}_s{size}"
    records = data / "rl.jsonl"
    if records.exists():
        return records
    data.mkdir(parents=True, exist_ok=True)
    colors = list(PALETTE)
    per_scene = max(1, frames // 8)
    scenes = [
        TimedScene(colors[i % len(colors)], 1, start, min(start + per_scene, frames), 0, 0)
        for i, start in enumerate(range(0, frames, per_scene))
    ]
    video = data / "long.mp4"
    write_scene_video(video, scenes, frames, fps=30.0, size=size)
    record = {
        "problem_id": "bench-0",
        "problem": "Which color comes first?\nA. red\nB. green\nC. blue\nD. yellow",
        "answer": "<answer>A</answer>",
        "problem_type": "first",
        "data_type": "video",
        "videos": [str(video.resolve())],
    }
    records.write_text(json.dumps(record) + "\n")
    return records
