"""Ablation of one RL step: naive vs encode-once vs encode-once + group prefix sharing.

    python benchmarks/ablation.py --frames 16 64 256 1024 --repeats 3

One `longrl rl` step (GRPO with the KL loss, so the reference pass runs) on one
synthetic video of `--frames` frames at `--size` x `--size` pixels (8 video tokens per
frame at 112), one prompt, a group of n = 8 responses, in three modes:

  naive        the vision tower re-encodes the video in every pass that needs it
               (rollout, reference log-probs, old log-probs if any, each update
               micro-batch) and every sample runs the whole prompt (no group prefix
               sharing in rollout or training): what peers do.
  encode-once  each video encoded once per step, its embeddings reused by every pass;
               prefix sharing off.
  all-on       encode-once + prefix sharing in rollout and training (the defaults).
  share-only   (on request: --modes share-only) prefix sharing, re-encoding every pass.

Each (frames, mode) point is one `longrl rl` process (niced like its parent) of
1 + `--repeats` steps; the first step is a warm-up and is left out, the table gives
the median of the others (the same prompt every step). All three modes sample the
same responses (they compute the same numbers, tests/e2e/test_video_embedding_reuse.py),
so they do the same work but for what is ablated. Writes JSON (after every point)
and a PNG bar plot.

Times are CPU seconds of one-thread runs by default (`--clock cpu --threads 1`, from
the step's `time/<phase>_cpu_s` metrics): on a shared machine they track the work done
where wall time does not. On an idle machine `--clock wall --threads 0` gives wall time.
Also printed: one ViT encode vs one LM prefill of the prompt (CPU s), to judge whether
the tiny vision tower is cheap relative to its LM (`--vision-depth/--vision-width`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tiny_models import bench_records, tiny_vl_model

SIZE = 112  # pixels per side: a frame pair is 8x8 patches -> 16 tokens (8 per frame)
MODES = {
    "naive": {
        "worker.rollout.share_prompt_prefix": "false",
        "worker.actor.share_prompt_prefix": "false",
        "worker.actor.reuse_video_embeddings": "false",
    },
    "encode-once": {
        "worker.rollout.share_prompt_prefix": "false",
        "worker.actor.share_prompt_prefix": "false",
    },
    "all-on": {},
    # Not in the default set: prefix sharing without encode-once (what encode-once adds
    # once the n-fold prompt work is gone).
    "share-only": {"worker.actor.reuse_video_embeddings": "false"},
}
DEFAULT_MODES = ("naive", "encode-once", "all-on")
PHASES = ("data", "rollout", "reward", "experience", "update")
_SUFFIX = {"cpu": "_cpu_s", "wall": "_s"}  # metrics.jsonl: time/<phase>_cpu_s, time/<phase>_s
# Runs the command in a fresh process and prints the largest peak RSS (KiB, Linux) of
# the processes it waited for (here: the one `longrl rl` process).
PEAK_RSS = (
    "import resource, subprocess, sys; "
    "code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(code)"
)


def bench_model(out: Path, hidden: int, layers: int, vision_depth: int, vision_width: int) -> Path:
    """A tiny Qwen2.5-VL checkpoint under `out` (built once per shape)."""
    return tiny_vl_model(out, hidden, layers, vision_depth, vision_width)


def prompt_input(model: Path, records: Path, frames: int, size: int = SIZE):
    """The record's prompt batch as the trainer builds it (video pixels included)."""
    from transformers import AutoConfig

    from longrl.data.dataset import iter_dataset
    from longrl.models.inputs import build_prompt_batch
    from longrl.models.load import load_processor
    from longrl.train.prompts import decode_clips

    data = step_data_config(frames, size)
    processor = load_processor(model, min_pixels=data.min_pixels, max_pixels=data.max_pixels)
    config = AutoConfig.from_pretrained(model, local_files_only=True)
    (sample,) = list(iter_dataset(records, None, on_error="raise"))
    clips = [decode_clips(sample, data)]
    return build_prompt_batch([sample], clips, processor, config, thinking=data.thinking)


def prompt_tokens(model: Path, records: Path, frames: int, size: int = SIZE) -> int:
    """Tokens of the record's prompt (video included)."""
    return int(prompt_input(model, records, frames, size).prompt_lengths[0])


def vision_vs_prefill(
    model_dir: Path, records: Path, frames: int, size: int, threads: int, repeats: int = 3
) -> dict:
    """CPU seconds (median of `repeats`, this process, `threads` threads) of one ViT
    encode of the video and of one LM prefill of the whole prompt (what a pass pays
    for the video once, with and without its embeddings at hand)."""
    import torch

    from longrl.models.load import load_model
    from longrl.train.prompts import prompt_batch
    from longrl.vision.encode import encode_videos

    if threads:
        torch.set_num_threads(threads)
    model = load_model(model_dir)
    model_input = prompt_input(model_dir, records, frames, size)
    vit, prefill = [], []
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first is a warm-up
            start = time.process_time()
            embeds = encode_videos(
                model, model_input.pixel_values_videos, model_input.video_grid_thw, None
            )
            vit.append(time.process_time() - start)
            batch = prompt_batch(model, model_input, embeds)
            start = time.process_time()
            model(
                inputs_embeds=batch.inputs_embeds,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                use_cache=True,
                logits_to_keep=1,
            )
            prefill.append(time.process_time() - start)
    out = {"vit_s": statistics.median(vit[1:]), "prefill_s": statistics.median(prefill[1:])}
    out["vit_over_prefill"] = out["vit_s"] / out["prefill_s"]
    return out


def tokens_per_frame(size: int) -> int:
    """LM tokens per frame: 28x28 pixels per token (2x2 merged 14-px patches), 2 frames
    per temporal patch."""
    return max(1, (size // 28) ** 2 // 2)


def step_data_config(frames: int, size: int = SIZE):
    from longrl.config.data import DataConfig

    return DataConfig(
        fps=None,
        num_frames=frames,
        max_frames=frames,
        min_pixels=size * size,
        max_pixels=size * size,
        max_prompt_length=frames * tokens_per_frame(size) + 1024,
    )


def rl_overrides(
    model: Path, records: Path, frames: int, run_dir: Path, steps: int, args, mode: dict
) -> dict:
    data = step_data_config(frames, args.size)
    return {
        "worker.actor.model.model_path": model,
        "data.train_files": records,
        "data.num_frames": frames,
        "data.max_frames": frames,
        "data.min_pixels": data.min_pixels,
        "data.max_pixels": data.max_pixels,
        "data.max_prompt_length": data.max_prompt_length,
        "data.max_response_length": args.response_length,
        "data.rollout_batch_size": 1,
        "worker.actor.global_batch_size": 1,
        "worker.rollout.n": args.n,
        "worker.actor.ppo_epochs": args.ppo_epochs,
        "trainer.max_steps": steps,
        "trainer.resume": "none",
        "trainer.save_freq": -1,
        "trainer.output_dir": run_dir,
        "trainer.logger": "[jsonl]",
        **mode,
    }


def run_steps(overrides: dict, threads: int | None = None, timeout: float | None = None) -> dict:
    """One `longrl rl` process; its metrics rows, peak RSS and wall time (or the failure)."""
    command = [
        sys.executable,
        "-m",
        "longrl.cli",
        "rl",
        *[f"{k}={v}" for k, v in overrides.items()],
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    peak = done.stdout.strip().splitlines()
    result = {"wall_s": wall, "returncode": done.returncode}
    if peak and peak[-1].isdigit():
        result["peak_rss_mib"] = int(peak[-1]) / 1024
    metrics = Path(overrides["trainer.output_dir"]) / "metrics.jsonl"
    if done.returncode != 0 or not metrics.exists():
        result.update(ok=False, error=_failure(done))
        return result
    result.update(ok=True, rows=[json.loads(line) for line in metrics.read_text().splitlines()])
    return result


def _failure(done: subprocess.CompletedProcess) -> str:
    if done.returncode < 0 or done.returncode == 137:
        return f"killed by signal {-done.returncode if done.returncode < 0 else 9} (out of memory?)"
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {done.returncode}"


def summarize(rows: list[dict], clock: str = "cpu") -> dict:
    """Medians over the measured steps (warm-up already dropped). `step_s` and the phases
    are in `clock` seconds (cpu: the process's CPU time, all threads; wall), the other
    clock is kept beside them."""
    other = "wall" if clock == "cpu" else "cpu"
    out: dict = {"steps": len(rows), "clock": clock}
    for name, suffix in ((clock, _SUFFIX[clock]), (other, _SUFFIX[other])):
        prefix = "" if name == clock else f"{name}_"
        out[f"{prefix}step_s"] = statistics.median(r[f"time/step{suffix}"] for r in rows)
        out[f"{prefix}step_s_all"] = [r[f"time/step{suffix}"] for r in rows]
        for phase in PHASES:
            values = [r.get(f"time/{phase}{suffix}", 0.0) for r in rows]
            out[f"{prefix}{phase}_s"] = statistics.median(values)
    for key in ("vision/encode_calls", "vision/reference_encode_calls", "vision/frames_encoded"):
        out[key.split("/", 1)[1]] = rows[-1].get(key, 0.0)
    out["response_length_mean"] = statistics.mean(r["response_length/mean"] for r in rows)
    return out


def table(points: list[dict], clock: str = "cpu") -> str:
    other = "wall" if clock == "cpu" else "cpu"
    lines = [
        f"| frames | prompt tokens | mode | {clock} s/step | data+encode | rollout | experience | "
        f"update | {other} s/step | ViT calls (policy+ref) | peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in points:
        if not p["ok"]:
            lines.append(
                f"| {p['frames']} | {p['prompt_tokens']} | {p['mode']} | failed: {p['error']} |"
            )
            continue
        lines.append(
            f"| {p['frames']} | {p['prompt_tokens']:,} | {p['mode']} | {p['step_s']:.2f} | "
            f"{p['data_s']:.2f} | {p['rollout_s']:.2f} | {p['experience_s']:.2f} | "
            f"{p['update_s']:.2f} | {p[f'{other}_step_s']:.2f} | "
            f"{p['encode_calls']:.0f}+{p['reference_encode_calls']:.0f} | "
            f"{p.get('peak_rss_mib', float('nan')):.0f} |"
        )
    return "\n".join(lines)


def ratios(points: list[dict]) -> list[dict]:
    by = {(p["frames"], p["mode"]): p for p in points if p["ok"]}
    out = []
    for frames in sorted({p["frames"] for p in points}):
        base = by.get((frames, "all-on"))
        if base is None:
            continue
        row = {"frames": frames}
        for mode in ("naive", "encode-once", "share-only"):
            if (frames, mode) in by:
                row[f"{mode}/all-on"] = by[(frames, mode)]["step_s"] / base["step_s"]
        if (frames, "naive") in by and (frames, "encode-once") in by:
            row["naive/encode-once"] = (
                by[(frames, "naive")]["step_s"] / by[(frames, "encode-once")]["step_s"]
            )
        out.append(row)
    return out


def ratio_table(rows: list[dict]) -> str:
    keys = ["naive/all-on", "encode-once/all-on", "naive/encode-once"]
    if any("share-only/all-on" in r for r in rows):
        keys.append("share-only/all-on")
    lines = [
        "| frames | " + " | ".join(k.replace("/", " / ") for k in keys) + " |",
        "| --- |" + " --- |" * len(keys),
    ]
    for r in rows:
        cells = [f"{r[key]:.2f}x" if key in r else "-" for key in keys]
        lines.append(f"| {r['frames']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(points: list[dict], path: Path, title: str, clock: str = "cpu") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    frames = sorted({p["frames"] for p in points})
    modes = [m for m in MODES if any(p["mode"] == m for p in points)]
    by = {(p["frames"], p["mode"]): p for p in points if p["ok"]}
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        xs = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(frames))]
        ys = [by[(f, mode)]["step_s"] if (f, mode) in by else 0.0 for f in frames]
        bars = left.bar(xs, ys, width, label=mode)
        for bar, f in zip(bars, frames, strict=True):
            base = by.get((f, "all-on"))
            if (f, mode) in by and base is not None:
                left.annotate(
                    f"{by[(f, mode)]['step_s'] / base['step_s']:.1f}x",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    left.set_xticks(range(len(frames)), [str(f) for f in frames])
    left.set_yscale("log")
    left.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    left.yaxis.set_major_formatter(ScalarFormatter())
    left.yaxis.set_minor_formatter(NullFormatter())
    left.set_xlabel("frames")
    left.set_ylabel(f"{clock} seconds per RL step (median)")
    left.set_title("step time (label: / all-on)")
    left.legend()
    # Phase breakdown at the largest frame count measured in every mode.
    complete = [f for f in frames if all((f, m) in by for m in modes)]
    if complete:
        f = complete[-1]
        bottom = [0.0] * len(modes)
        for phase in PHASES:
            values = [by[(f, m)][f"{phase}_s"] for m in modes]
            right.bar(modes, values, bottom=bottom, label=phase)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        right.set_ylabel(f"{clock} seconds")
        right.set_title(f"phases at {f} frames")
        right.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def save(args, points: list[dict], costs: list[dict], started: float, complete: bool) -> None:
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    settings["tokens_per_frame"] = tokens_per_frame(args.size)
    result = {
        "settings": settings,
        "complete": complete,
        "points": points,
        "ratios": ratios(points),
        "vision_vs_prefill": costs,
        "seconds": time.perf_counter() - started,
        "loadavg": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(DEFAULT_MODES))
    parser.add_argument("--repeats", type=int, default=3, help="measured steps after a warm-up")
    parser.add_argument("--n", type=int, default=8, help="group size")
    parser.add_argument("--response-length", type=int, default=32, help="max new tokens")
    parser.add_argument("--ppo-epochs", type=int, default=1, help=">1 adds the old log-prob pass")
    parser.add_argument("--size", type=int, default=SIZE, help="frame side in pixels")
    parser.add_argument("--hidden", type=int, default=128, help="language-model width")
    parser.add_argument("--layers", type=int, default=2, help="language-model layers")
    parser.add_argument("--vision-depth", type=int, default=2, help="vision-tower blocks")
    parser.add_argument("--vision-width", type=int, default=64, help="vision-tower width")
    parser.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default="cpu",
        help="cpu: CPU seconds of the step (robust on a shared machine; use with --threads 1); "
        "wall: elapsed seconds",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs (0: inherit)"
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per point")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_ablation"))
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/ablation.json"))
    parser.add_argument("--plot", type=Path, default=Path("runs/benchmarks/ablation.png"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = bench_model(args.work, args.hidden, args.layers, args.vision_depth, args.vision_width)
    started = time.perf_counter()
    points, costs = [], []
    for frames in args.frames:
        records = bench_records(args.work, frames, args.size)
        tokens = prompt_tokens(model, records, frames, args.size)
        cost = vision_vs_prefill(model, records, frames, args.size, args.threads)
        costs.append({"frames": frames, "prompt_tokens": tokens, **cost})
        print(
            f"{frames} frames: ViT {cost['vit_s']:.3f} s, LM prefill {cost['prefill_s']:.3f} s "
            f"(CPU, one pass each)",
            file=sys.stderr,
            flush=True,
        )
        for mode in args.modes:
            run_dir = args.work / f"run_f{frames}_{mode}"
            overrides = rl_overrides(
                model, records, frames, run_dir, 1 + args.repeats, args, MODES[mode]
            )
            result = run_steps(overrides, args.threads, args.timeout)
            point = {"frames": frames, "prompt_tokens": tokens, "mode": mode, **result}
            if result["ok"]:
                point.update(summarize(result.pop("rows")[1:], args.clock))
                point.pop("rows", None)
            print(
                f"{frames} frames, {mode}: "
                + (f"{point['step_s']:.2f} s/step" if point["ok"] else point["error"]),
                file=sys.stderr,
                flush=True,
            )
            points.append(point)
            save(args, points, costs, started, complete=False)  # a partial run keeps its points
    print(table(points, args.clock))
    print()
    rows = ratios(points)
    print(ratio_table(rows))
    print()
    print("| frames | ViT encode s | LM prefill s | ViT / prefill |")
    print("| --- | --- | --- | --- |")
    for c in costs:
        print(
            f"| {c['frames']} | {c['vit_s']:.3f} | {c['prefill_s']:.3f} | "
            f"{c['vit_over_prefill']:.2f} |"
        )
    save(args, points, costs, started, complete=True)
    plot(
        points,
        args.plot,
        f"one RL step, n={args.n}, {args.size}px frames, LM {args.hidden}x{args.layers}, "
        f"ViT {args.vision_width}x{args.vision_depth}, median of {args.repeats}, "
        f"{args.clock} time, {args.threads or 'default'} thread(s)",
        args.clock,
    )
    print(f"\nwrote {args.out} and {args.plot} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
