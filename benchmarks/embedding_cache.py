"""Embedding cache: RL step time cold vs warm, and disk bytes per hour of video.

Step time: one `longrl rl` step (tiny Qwen2.5-VL, 1 prompt, n=2 replies of up to
16 tokens) on a 640x360 h264 video sampled at 2 fps to 64, 256 and 1,024 frames
at the default resolution (data.max_pixels = 224*224), first with an empty cache
(decode + preprocess + ViT + write) then with the cache filled by that run
(no decode, no ViT). The step's other phases (rollout, log-probs, update) are
the same in both; the tiny ViT is far cheaper than a real one, so the ratio here
is a lower bound of the gain with Qwen2.5-VL's 670M-parameter vision tower.

Disk: the entry of a one-hour 16:9 video at the defaults (fps 2, max_frames 768,
224*224 pixels) is written and measured; bytes for real model sizes (bf16) follow
from its token count (tokens x hidden x 2 + the same per-entry overhead).

    python benchmarks/embedding_cache.py --frames 64 256 1024
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

# Real models: hidden size of the language model (= width of a video embedding row).
REAL_HIDDEN = {"Qwen2.5-VL-3B": 2048, "Qwen2.5-VL-7B": 3584}


def make_video(path: Path, frames: int, fps: float, width: int, height: int) -> Path:
    """A textured, moving h264 video (decoding it costs what real content costs)."""
    import av

    yy, xx = np.mgrid[0:height, 0 : 2 * width].astype(np.float32)
    pattern = np.stack(
        [
            np.sin(xx / 17) + np.cos(yy / 11),
            np.sin((xx + yy) / 23),
            np.cos(xx / 7) * np.sin(yy / 13),
        ],
        -1,
    )
    pattern = ((pattern - pattern.min()) / np.ptp(pattern) * 255).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "g": "32"}
        for i in range(frames):
            x = (5 * i) % width
            picture = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(pattern[:, x : x + width]), format="rgb24"
            )
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_records(path: Path, video: Path) -> Path:
    record = {
        "problem_id": "bench-0",
        "problem": "Which color fills the screen at the start of the video?\nA. red\nB. blue",
        "answer": "<answer>A</answer>",
        "problem_type": "multiple choice",
        "data_type": "video",
        "videos": [str(video)],
    }
    path.write_text(json.dumps(record) + "\n")
    return path


def rl_step(model: Path, records: Path, frames: int, cache_dir: Path, run_dir: Path) -> dict:
    from longrl.config import load_config
    from longrl.train.metrics import read_metrics
    from longrl.train.rl import run_rl

    settings = {
        "worker.actor.model.model_path": model,
        "data.train_files": records,
        "data.rollout_batch_size": 1,
        "worker.actor.global_batch_size": 1,
        "worker.rollout.n": 2,
        "data.max_response_length": 16,
        "data.fps": 2,
        "data.max_frames": frames,
        "data.max_prompt_length": 65536,
        "data.cache_dir": cache_dir,
        "trainer.max_steps": 1,
        "trainer.output_dir": run_dir,
        "trainer.logger": "[jsonl]",
        "trainer.save_freq": -1,
    }
    config = load_config(None, [f"{k}={v}" for k, v in settings.items()])
    (row,) = read_metrics(run_rl(config) / "metrics.jsonl")
    return row


def step_times(model: Path, work: Path, frame_counts: list[int], repeats: int) -> list[dict]:
    # A throwaway step first: one-time costs (imports, kernel set-up) land in neither column.
    warmup = write_records(work / "warmup.jsonl", make_video(work / "warmup.mp4", 16, 4.0, 64, 36))
    rl_step(model, warmup, 8, work / "cache_warmup", work / "warmup")
    rows = []
    for frames in frame_counts:
        video = make_video(work / f"video_{frames}.mp4", 2 * frames, 4.0, 640, 360)
        records = write_records(work / f"records_{frames}.jsonl", video)
        colds, warms = [], []
        for repeat in range(repeats):
            cache = work / f"cache_{frames}_{repeat}"
            colds.append(rl_step(model, records, frames, cache, work / f"cold_{frames}_{repeat}"))
            warms.append(rl_step(model, records, frames, cache, work / f"warm_{frames}_{repeat}"))
            assert warms[-1]["vision/encode_calls"] == 0, "the warm step ran the vision tower"
        cold_step, warm_step = _median(colds, "time/step_s"), _median(warms, "time/step_s")
        cold_data, warm_data = _median(colds, "time/data_s"), _median(warms, "time/data_s")
        rows.append(
            {
                "frames": frames,
                "prompt_tokens": _prompt_tokens(work / f"cache_{frames}_0"),
                "repeats": repeats,
                "cold_step_s": cold_step,
                "warm_step_s": warm_step,
                "step_ratio": cold_step / warm_step,
                "cold_data_s": cold_data,
                "warm_data_s": warm_data,
                "data_ratio": cold_data / warm_data,
            }
        )
        print(_step_row(rows[-1]), flush=True)
    return rows


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def _prompt_tokens(cache: Path) -> int:
    from safetensors import safe_open

    (entry,) = cache.glob("v1/*/*/*.safetensors")
    with safe_open(str(entry), framework="pt") as handle:
        return int(handle.get_slice("embeds").get_shape()[0])


def disk_per_hour(model: Path, work: Path) -> dict:
    """Bytes of the entry of a one-hour 16:9 video at the default data settings."""
    from longrl.config.data import DataConfig
    from longrl.config.worker import ModelConfig
    from longrl.train.policy import load_policy
    from longrl.vision.cache import cache_for
    from longrl.vision.cached_encoder import CachedVideoEncoder
    from longrl.vision.keys import SamplingSettings
    from longrl.vision.precompute import VideoTask, precompute

    # 900 frames over 3600 s: at fps 2 the defaults take max_frames = 768 of them,
    # as they would from an hour of 30 fps video.
    video = make_video(work / "hour.mp4", 900, 0.25, 640, 360)
    data = DataConfig(cache_dir=str(work / "cache_hour"))
    policy = load_policy(ModelConfig(model_path=str(model)), data)
    cache = cache_for(policy.model, data.cache_dir, memory_bytes=0, on_mismatch="raise")
    encoder = CachedVideoEncoder(policy.model, policy.processor, cache)
    sampling = SamplingSettings(data.num_frames, data.fps, data.min_frames, data.max_frames)
    summary = precompute(encoder, [VideoTask(str(video), sampling)], progress=False)
    hidden = policy.model.get_input_embeddings().embedding_dim
    element = next(policy.model.model.visual.parameters()).element_size()
    overhead = summary.bytes - summary.tokens * hidden * element
    frames = data.max_frames
    out = {
        "frames_per_hour": frames,
        "tokens_per_hour": summary.tokens,
        "tiny_bytes_per_hour": summary.bytes,
        "tiny_hidden": hidden,
        "overhead_bytes": overhead,
    }
    for name, width in REAL_HIDDEN.items():
        capped = summary.tokens * width * 2 + overhead
        # Uncapped fps 2 = 7,200 frames/hour (data.max_frames >= 7200), tokens scale with frames.
        uncapped = summary.tokens * 7200 // frames * width * 2 + overhead
        out[name] = {"bytes_per_hour_default": capped, "bytes_per_hour_fps2_uncapped": uncapped}
    return out


def _step_row(row: dict) -> str:
    return (
        f"| {row['frames']} | {row['prompt_tokens']} | {row['cold_step_s']:.2f} | "
        f"{row['warm_step_s']:.2f} | {row['step_ratio']:.2f}x | {row['cold_data_s']:.2f} | "
        f"{row['warm_data_s']:.3f} | {row['data_ratio']:.0f}x |"
    )


def plot(steps: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    frames = [str(row["frames"]) for row in steps]
    x = np.arange(len(frames))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for axis, (key, what) in zip(
        axes, [("step", "whole RL step"), ("data", "data + encode phase")], strict=True
    ):
        cold = axis.bar(x - 0.2, [row[f"cold_{key}_s"] for row in steps], 0.4, label="cold")
        axis.bar(x + 0.2, [row[f"warm_{key}_s"] for row in steps], 0.4, label="warm")
        axis.bar_label(cold, [f"{row[f'{key}_ratio']:.1f}x" for row in steps], fontsize=8)
        # A warm data phase is orders of magnitude shorter than a cold one.
        axis.set_yscale("log")
        axis.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.yaxis.set_major_formatter(ScalarFormatter())
        axis.yaxis.set_minor_formatter(NullFormatter())
        axis.margins(y=0.2)  # room for the labels and the legend above the bars
        axis.set_xticks(x, frames)
        axis.set_xlabel("frames")
        axis.set_ylabel("wall seconds")
        axis.set_title(f"{what} (label: cold / warm)")
        axis.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--repeats", type=int, default=1, help="cold/warm pairs per size (median)")
    parser.add_argument("--out", default="runs/benchmarks/embedding_cache.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from longrl.models.tiny import build_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_tiny_checkpoint(work / "model", kind="qwen2_5_vl")
        print(
            "| frames | video tokens | cold step s | warm step s | step cold/warm | "
            "cold data+encode s | warm data+encode s | data cold/warm |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        started = time.perf_counter()
        steps = step_times(model, work, args.frames, args.repeats)
        disk = disk_per_hour(model, work)
    print(
        f"\ndisk per hour of video (defaults: fps 2, max_frames 768, 224*224 px; "
        f"{disk['tokens_per_hour']} tokens):"
    )
    print(f"  tiny model (hidden {disk['tiny_hidden']}, fp32): {disk['tiny_bytes_per_hour']:,} B")
    for name in REAL_HIDDEN:
        figures = disk[name]
        print(
            f"  {name} (bf16): {figures['bytes_per_hour_default'] / 2**20:.1f} MiB; "
            f"fps 2 uncapped (7,200 frames): {figures['bytes_per_hour_fps2_uncapped'] / 2**20:.1f} MiB"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"steps": steps, "disk": disk, "seconds": time.perf_counter() - started}
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(
        steps,
        out.with_suffix(".png"),
        f"one RL step, tiny Qwen2.5-VL, n=2, 640x360 h264 at 2 fps, median of {args.repeats}; "
        "cold: empty embedding cache, warm: filled",
    )
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
