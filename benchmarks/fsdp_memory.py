"""Peak memory per rank of RL training with replicated weights and with FSDP2.

    python benchmarks/fsdp_memory.py --hidden 512 --layers 8 --nproc 2 --out runs/bench_fsdp

Builds a tiny Qwen2.5-VL checkpoint of the given width and depth and a small synthetic
dataset, then runs `longrl rl` for `--steps` steps (rollout n=2, KL loss against the
reference model, AdamW) on `--nproc` data-parallel processes, once with
worker.actor.fsdp.enable=false and once with true. Each rank is its own process (the
torchrun environment set by hand) wrapped by a parent that reports that rank's peak
resident memory. Short prompts keep activations small, so the figures show what
sharding divides: weights (policy and reference), gradients and AdamW moments.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

# The child's peak RSS (KiB on Linux), printed as the last line of stdout.
_PEAK_OF_CHILD = (
    "import resource, subprocess, sys; "
    "code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(code)"
)


def build_inputs(out: Path, hidden: int, layers: int) -> tuple[Path, Path]:
    from longrl.data.synth import SynthConfig, write_dataset
    from tiny_models import tiny_vl_model

    model = tiny_vl_model(out, hidden, layers)
    data = out / "data"
    if not (data / "rl.jsonl").exists():
        write_dataset(data, SynthConfig(seed=0, num_sft=1, num_rl=8, max_frames=16))
    return model, data / "rl.jsonl"


def parameter_count(model_dir: Path) -> int:
    from longrl.models.load import load_model
    from longrl.models.tiny import count_parameters

    return count_parameters(load_model(str(model_dir)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(
    model: Path, records: Path, nproc: int, fsdp: bool, steps: int, out: Path
) -> tuple[list[float], float]:
    """Peak RSS (MiB) of each rank, and the mean step time (s)."""
    run_dir = out / f"run_n{nproc}_{'fsdp' if fsdp else 'replicated'}"
    args = {
        "worker.actor.model.model_path": model,
        "data.train_files": records,
        "data.fps": 2,
        "data.max_frames": 8,
        "data.max_response_length": 8,
        "data.rollout_batch_size": nproc,
        "worker.actor.global_batch_size": nproc,
        "worker.rollout.n": 2,
        "worker.actor.fsdp.enable": str(fsdp).lower(),
        "algorithm.use_kl_loss": "true",
        "trainer.max_steps": steps,
        "trainer.save_freq": -1,
        "trainer.resume": "none",
        "trainer.output_dir": run_dir,
        "trainer.logger": "[jsonl]",
    }
    port = str(free_port())
    procs = []
    for rank in range(nproc):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(nproc),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        command = [sys.executable, "-m", "longrl.cli", "rl", *[f"{k}={v}" for k, v in args.items()]]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _PEAK_OF_CHILD, *command],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    peaks = []
    for rank, proc in enumerate(procs):
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"rank {rank} (fsdp={fsdp}) failed:\n{stderr[-4000:]}")
        peaks.append(int(stdout.strip().splitlines()[-1]) / 1024)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == steps and "actor/grad_norm" in rows[-1]  # the update ran
    return peaks, sum(r["time/step_s"] for r in rows) / len(rows)


def plot(result: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    ranks = len(rows[0]["peak_rss_mib"])
    width = 0.8 / ranks
    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    for rank in range(ranks):
        xs = [i + (rank - (ranks - 1) / 2) * width for i in range(len(rows))]
        bars = axis.bar(
            xs, [row["peak_rss_mib"][rank] for row in rows], width, label=f"rank {rank}"
        )
        axis.bar_label(bars, fmt="%.0f", fontsize=8)
    # What sharding can divide: every rank holds all of it when replicated.
    axis.axhline(
        result["state_mib"], color="grey", linestyle="--", label="policy + reference state, whole"
    )
    axis.set_xticks(
        range(len(rows)), [f"{row['mode']}\n{row['step_s']:.1f} s/step" for row in rows]
    )
    axis.set_ylabel("peak RSS per rank (MiB)")
    axis.set_title("peak memory per rank")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))  # outside: bars vary
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512, help="language-model width")
    parser.add_argument("--layers", type=int, default=8, help="language-model layers")
    parser.add_argument("--nproc", type=int, default=2, help="data-parallel processes")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_fsdp"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model, records = build_inputs(args.out, args.hidden, args.layers)
    params = parameter_count(model)
    # fp32 policy weights + gradients + two AdamW moments, plus the reference's weights.
    state_mib = params * 4 * 5 / 2**20
    print(f"model: hidden {args.hidden} x {args.layers} layers, {params / 1e6:.1f} M parameters")
    print(f"policy (weights, grads, AdamW) + reference weights, whole: {state_mib:.0f} MiB")
    threshold = os.environ.get("MALLOC_MMAP_THRESHOLD_", "glibc default (dynamic)")
    print(f"MALLOC_MMAP_THRESHOLD_: {threshold}")
    print("| weights | peak RSS per rank (MiB) | step (s) |")
    print("| --- | --- | --- |")
    rows = []
    for fsdp in (False, True):
        peaks, step_s = run(model, records, args.nproc, fsdp, args.steps, args.out)
        name = "FSDP2 (sharded)" if fsdp else "replicated"
        print(f"| {name} | {', '.join(f'{p:.0f}' for p in peaks)} | {step_s:.1f} |", flush=True)
        rows.append({"mode": name, "fsdp": fsdp, "peak_rss_mib": peaks, "step_s": step_s})
    result = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "parameters": params,
        "state_mib": state_mib,
        "malloc_mmap_threshold": threshold,
        "rows": rows,
    }
    # --out is the work directory (model, data, runs): the results go beside them.
    json_path = args.out / "fsdp_memory.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    plot(
        result,
        json_path.with_suffix(".png"),
        f"longrl rl, {args.nproc} ranks, LM {args.hidden}x{args.layers} "
        f"({params / 1e6:.1f}M params), {args.steps} step(s), n=2, KL loss, AdamW",
    )
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
