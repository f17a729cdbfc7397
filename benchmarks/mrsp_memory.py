"""Peak memory and time of one RL step on one long video at several sequence-parallel sizes.

    python benchmarks/mrsp_memory.py --frames 1024 --sp 1 2 4 --out runs/bench_mrsp

Builds a tiny Qwen2.5-VL checkpoint (language-model width `--hidden`), a single
`--frames`-frame 112x112 video (8 video tokens per frame) and a one-record dataset,
then runs `longrl rl` for one step (rollout n=2, old log-probs, update) under torchrun
with sp = world size, and prints, per sp: the peak resident memory of the busiest
rank, the frames its vision tower encoded, and the step time. Runs are sequential;
on a small machine every process shares the same cores, so compare memory across
sp sizes and treat times as indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SIZE = 112  # pixels per side; at max_pixels 112*112 a frame pair is 8x8 patches -> 16 tokens
# Runs the command in a fresh process and prints the largest peak RSS (KiB, Linux) of any
# single descendant it waited for: torchrun waits for its workers, so this is the busiest
# rank (the agent itself is smaller).
_PEAK_OF_DESCENDANTS = (
    "import resource, subprocess, sys; "
    "code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(code)"
)


def build_inputs(out: Path, frames: int, hidden: int, layers: int) -> tuple[Path, Path]:
    from tiny_models import bench_records, tiny_vl_model

    return tiny_vl_model(out, hidden, layers), bench_records(out, frames, SIZE)


def run_step(model: Path, records: Path, frames: int, sp: int, out: Path) -> dict[str, float]:
    run_dir = out / f"run_f{frames}_sp{sp}"
    args = {
        "worker.actor.model.model_path": model,
        "data.train_files": records,
        "data.num_frames": frames,
        "data.max_frames": frames,
        "data.min_pixels": SIZE * SIZE,
        "data.max_pixels": SIZE * SIZE,
        "data.max_prompt_length": frames * 8 + 1024,
        "data.max_response_length": 8,
        "data.rollout_batch_size": 1,
        "worker.actor.global_batch_size": 1,
        "worker.actor.micro_batch_size_per_device_for_update": 2,
        "worker.rollout.n": 2,
        "worker.actor.ppo_epochs": 2,  # old log-probs pass too
        "worker.actor.ulysses_sequence_parallel_size": sp,
        "algorithm.disable_kl": "true",
        "trainer.max_steps": 1,
        "trainer.resume": "none",
        "trainer.output_dir": run_dir,
        "trainer.logger": "[jsonl]",
        "trainer.collective_timeout_s": 3600,
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={sp}",
        "-m",
        "longrl.cli",
        "rl",
        *[f"{k}={v}" for k, v in args.items()],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_OF_DESCENDANTS, *command],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"sp={sp} failed:\n{done.stderr[-4000:]}")
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    (row,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "peak_rss_mib": peak_kib / 1024,
        "frames_per_rank": row["vision/frames_per_rank_max"],
        "frames_encoded": row["vision/frames_encoded"],
        "step_s": row["time/step_s"],
        "wall_s": wall,
    }


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({row["sp"] for row in rows})
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for frames in sorted({row["frames"] for row in rows}):
        mine = [row for row in rows if row["frames"] == frames]
        sps = [row["sp"] for row in mine]
        left.plot(sps, [row["peak_rss_mib"] for row in mine], marker="o", label=f"{frames} frames")
        for row in mine:
            left.annotate(
                f"{row['frames_per_rank']:.0f} of {row['frames_encoded']:.0f}",
                (row["sp"], row["peak_rss_mib"]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=7,
            )
        right.plot(sps, [row["step_s"] for row in mine], marker="o", label=f"{frames} frames")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(sizes, [str(sp) for sp in sizes])
        axis.set_xlabel("sequence-parallel size (ranks)")
        # From zero, so a few MiB of difference do not look like a factor; room for labels.
        axis.margins(x=0.1)
        axis.set_ylim(0, 1.15 * axis.get_ylim()[1])
        axis.legend()
    left.set_ylabel("peak RSS, busiest rank (MiB)")
    left.set_title("memory (label: frames its vision tower encoded)")
    right.set_ylabel("wall seconds")
    right.set_title("step time (indicative: ranks share the cores)")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[1024])
    parser.add_argument("--sp", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--hidden", type=int, default=256, help="language-model width")
    parser.add_argument("--layers", type=int, default=2, help="language-model layers")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_mrsp"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        "| frames | video tokens | sp | peak RSS, busiest rank (MiB) | frames encoded by it | "
        "step (s) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    rows = []
    for frames in args.frames:
        model, records = build_inputs(args.out, frames, args.hidden, args.layers)
        for sp in args.sp:
            result = run_step(model, records, frames, sp, args.out)
            print(
                f"| {frames} | {frames * 8} | {sp} | {result['peak_rss_mib']:.0f} | "
                f"{result['frames_per_rank']:.0f} of {result['frames_encoded']:.0f} | "
                f"{result['step_s']:.1f} |",
                flush=True,
            )
            rows.append({"frames": frames, "video_tokens": frames * 8, "sp": sp, **result})
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    # --out is the work directory (model, data, runs): the results go beside them.
    json_path = args.out / "mrsp_memory.json"
    json_path.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    plot(
        rows,
        json_path.with_suffix(".png"),
        f"one longrl rl step, LM {args.hidden}x{args.layers}, {SIZE}px frames "
        "(8 video tokens each), n=2, 2 PPO epochs",
    )
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
