"""How far one RL step scales in frames: peak memory and seconds per step vs frames.

    python benchmarks/scale.py --frames 256 512 1024 2048 4096 8192 --budget-min 30

The step of benchmarks/ablation.py with everything on (the defaults: encode once,
group prefix sharing): one synthetic video at `--size` px (8 tokens per frame at 112),
one prompt, n = 8 responses, GRPO with the KL loss. Each frame count is one
`longrl rl` process of `--steps` steps (the first a warm-up; the time is the median of
the others); its peak RSS is the kernel's high-water mark for that process (wait4).
A watcher kills a point whose resident memory passes `--limit-gib` (or leaves less than
`--reserve-gib` of the machine's memory available), so an out-of-memory point ends alone
and the machine does not swap. Points run from small to large; a point whose predicted
time (power law through the last two points) would overrun `--budget-min` is skipped.

Prints a table, the fitted growth (memory linear in frames, time a power of frames)
and the frame count the memory fit puts at the limit; writes JSON and a PNG.
`data.max_frames` is capped at 8192 (longrl.video.sampling.MAX_FRAMES_LIMIT): where the
fit puts the limit beyond that, the cap binds first at this resolution.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from ablation import (
    PHASES,
    SIZE,
    bench_model,
    bench_records,
    prompt_tokens,
    rl_overrides,
    tokens_per_frame,
)

MAX_FRAMES_LIMIT = 8192  # longrl.video.sampling.MAX_FRAMES_LIMIT


def _vm_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def run_point(
    overrides: dict, threads: int, limit_kib: int, reserve_kib: int, timeout: float | None
) -> dict:
    """One `longrl rl` process, watched: its peak RSS (wait4), exit, and whether it was
    stopped for memory or time."""
    command = [sys.executable, "-m", "longrl.cli", "rl"]
    command += [f"{k}={v}" for k, v in overrides.items()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log = Path(overrides["trainer.output_dir"]) / "stderr.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    stopped: dict = {}
    finished = threading.Event()
    with log.open("w") as err:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)

        def watch() -> None:
            # Not proc.poll(): that could reap the process before wait4 reads its usage.
            while not finished.wait(0.2):
                rss = _vm_kib(proc.pid, "VmRSS")
                elapsed = time.perf_counter() - start
                reason = None
                if rss > limit_kib:
                    reason = f"resident memory passed the limit ({limit_kib / 2**20:.1f} GiB)"
                elif available_kib() < reserve_kib:
                    reason = (
                        f"the machine had under {reserve_kib / 2**20:.1f} GiB available "
                        f"(this point: {rss / 2**20:.1f} GiB resident)"
                    )
                elif timeout is not None and elapsed > timeout:
                    reason = f"over the time budget ({timeout:.0f} s)"
                if reason:
                    stopped.update(reason=reason, at_s=elapsed, rss_kib=rss)
                    proc.kill()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        finished.set()
        watcher.join()
    result = {
        "wall_s": time.perf_counter() - start,
        "returncode": proc.returncode,
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }
    metrics = Path(overrides["trainer.output_dir"]) / "metrics.jsonl"
    rows = (
        [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    )
    if stopped or proc.returncode != 0 or len(rows) < overrides["trainer.max_steps"]:
        if stopped:
            error = f"stopped: {stopped['reason']} after {stopped['at_s']:.0f} s"
        elif proc.returncode < 0:
            error = f"killed by signal {-proc.returncode} (out of memory?)"
        else:
            lines = [line for line in log.read_text().splitlines() if line.strip()]
            error = lines[-1] if lines else f"exit code {proc.returncode}"
        result.update(ok=False, error=error, stopped=stopped or None)
        return result
    measured = rows[1:] or rows
    result.update(ok=True, measured_steps=len(measured))
    for clock, suffix in (("cpu", "_cpu_s"), ("wall", "_s")):
        result[f"{clock}_step_s"] = statistics.median(r[f"time/step{suffix}"] for r in measured)
        for phase in PHASES:
            values = [r.get(f"time/{phase}{suffix}", 0.0) for r in measured]
            result[f"{clock}_{phase}_s"] = statistics.median(values)
    result["response_length_mean"] = statistics.mean(r["response_length/mean"] for r in measured)
    return result


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    mx, my = statistics.mean(xs), statistics.mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - b * mx, b


def power_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares in log-log: y = c x^k; returns (c, k)."""
    a, k = linear_fit([math.log(x) for x in xs], [math.log(y) for y in ys])
    return math.exp(a), k


def fits(points: list[dict], clock: str, limit_mib: float) -> dict:
    ok = [p for p in points if p["ok"]]
    out: dict = {}
    if len(ok) < 2:
        return out
    frames = [p["frames"] for p in ok]
    memory = [p["peak_rss_mib"] for p in ok]
    a, b = linear_fit(frames, memory)
    out["memory_mib"] = {"intercept": a, "per_frame": b, "form": "a + b * frames"}
    out["memory_power"] = dict(zip(("c", "k"), power_fit(frames, memory), strict=True))
    if b > 0:
        out["frames_at_limit"] = (limit_mib - a) / b
    # Time: the exponent over the larger half of the points (the small ones are overhead).
    top = ok[len(ok) // 2 :] if len(ok) >= 4 else ok
    c, k = power_fit([p["frames"] for p in top], [p[f"{clock}_step_s"] for p in top])
    out["time_s"] = {
        "c": c,
        "k": k,
        "form": "c * frames^k",
        "over_frames": [p["frames"] for p in top],
    }
    out["time_exponents"] = [
        {
            "frames": [p["frames"], q["frames"]],
            "k": math.log(q[f"{clock}_step_s"] / p[f"{clock}_step_s"])
            / math.log(q["frames"] / p["frames"]),
        }
        for p, q in itertools.pairwise(ok)
    ]
    return out


def predicted_seconds(points: list[dict], frames: int, steps: int, clock: str) -> float | None:
    """Wall seconds a point would take: the last two points' power law (of wall time per
    process, which holds start-up too) scaled to `frames`."""
    ok = [p for p in points if p["ok"]]
    if len(ok) < 2:
        return None
    p, q = ok[-2], ok[-1]
    k = math.log(q["wall_s"] / p["wall_s"]) / math.log(q["frames"] / p["frames"])
    return q["wall_s"] * (frames / q["frames"]) ** max(k, 1.0)


def table(points: list[dict], clock: str) -> str:
    lines = [
        f"| frames | prompt tokens | {clock} s/step | wall s/step | rollout | experience | "
        "update | data+encode | peak RSS GiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in points:
        tokens = f"{p['prompt_tokens']:,}" if "prompt_tokens" in p else "-"
        head = f"| {p['frames']} | {tokens} |"
        if not p["ok"]:
            peak = p.get("peak_rss_mib")
            memory = f" (peak {peak / 1024:.1f} GiB)" if peak else ""
            lines.append(f"{head} {p['error']}{memory} |")
            continue
        lines.append(
            f"{head} {p[f'{clock}_step_s']:.1f} | {p['wall_step_s']:.1f} | "
            f"{p[f'{clock}_rollout_s']:.1f} | {p[f'{clock}_experience_s']:.1f} | "
            f"{p[f'{clock}_update_s']:.1f} | {p[f'{clock}_data_s']:.1f} | "
            f"{p['peak_rss_mib'] / 1024:.2f} |"
        )
    return "\n".join(lines)


def plot(points: list[dict], fitted: dict, path: Path, clock: str, limit_gib: float, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ok = [p for p in points if p["ok"]]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    frames = [p["frames"] for p in ok]
    left.loglog(frames, [p[f"{clock}_step_s"] for p in ok], "o-", label=f"{clock} s/step")
    if "time_s" in fitted:
        c, k = fitted["time_s"]["c"], fitted["time_s"]["k"]
        xs = [min(frames), max(frames)]
        left.loglog(xs, [c * x**k for x in xs], "--", label=f"fit ~ frames^{k:.2f}")
    for axis in (left.xaxis, left.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    left.set_xticks(frames, [str(f) for f in frames])
    left.set_xlabel("frames")
    left.set_ylabel(f"{clock} seconds per RL step")
    left.set_title("time per step")
    left.legend()
    right.plot(frames, [p["peak_rss_mib"] / 1024 for p in ok], "o-", label="peak RSS")
    failed = [p for p in points if not p["ok"] and p.get("peak_rss_mib")]
    if failed:
        right.plot(
            [p["frames"] for p in failed],
            [p["peak_rss_mib"] / 1024 for p in failed],
            "x",
            color="red",
            label="stopped / failed",
        )
    if "memory_mib" in fitted:
        a, b = fitted["memory_mib"]["intercept"], fitted["memory_mib"]["per_frame"]
        top = max(max(frames), min(fitted.get("frames_at_limit", 0), 4 * max(frames)))
        right.plot([0, top], [a / 1024, (a + b * top) / 1024], "--", label="linear fit")
    right.axhline(limit_gib, color="gray", linestyle=":", label=f"{limit_gib:g} GiB")
    right.axvline(MAX_FRAMES_LIMIT, color="black", linestyle=":", label="max_frames cap")
    right.set_xlabel("frames")
    right.set_ylabel("GiB")
    right.set_title("peak resident memory")
    right.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def save(args, points: list[dict], started: float, complete: bool) -> None:
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    settings["tokens_per_frame"] = tokens_per_frame(args.size)
    result = {
        "settings": settings,
        "complete": complete,
        "points": points,
        "fits": fits(points, args.clock, args.limit_gib * 1024),
        "largest_fitting_frames": max((p["frames"] for p in points if p["ok"]), default=None),
        "seconds": time.perf_counter() - started,
        "loadavg": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    parser.add_argument("--steps", type=int, default=2, help="steps per point (1st = warm-up)")
    parser.add_argument("--n", type=int, default=8, help="group size")
    parser.add_argument("--response-length", type=int, default=32, help="max new tokens")
    parser.add_argument("--ppo-epochs", type=int, default=1)
    parser.add_argument("--size", type=int, default=SIZE, help="frame side in pixels")
    parser.add_argument("--hidden", type=int, default=128, help="language-model width")
    parser.add_argument("--layers", type=int, default=2, help="language-model layers")
    parser.add_argument("--vision-depth", type=int, default=2)
    parser.add_argument("--vision-width", type=int, default=64)
    parser.add_argument("--limit-gib", type=float, default=24.0, help="memory budget")
    parser.add_argument(
        "--reserve-gib", type=float, default=1.0, help="stop a point when less is available"
    )
    parser.add_argument("--budget-min", type=float, default=30.0, help="whole-run time cap")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS (0: inherit)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_scale"))
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/scale.json"))
    parser.add_argument("--plot", type=Path, default=Path("runs/benchmarks/scale.png"))
    args = parser.parse_args()
    if max(args.frames) > MAX_FRAMES_LIMIT:
        parser.error(f"--frames: data.max_frames is capped at {MAX_FRAMES_LIMIT}")
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    deadline = started + 60 * args.budget_min
    model = bench_model(args.work, args.hidden, args.layers, args.vision_depth, args.vision_width)
    limit_kib = int(args.limit_gib * 2**20)
    points: list[dict] = []
    for frames in sorted(args.frames):
        left = deadline - time.perf_counter()
        guess = predicted_seconds(points, frames, args.steps, args.clock)
        if guess is not None and guess > left:
            points.append(
                {
                    "frames": frames,
                    "ok": False,
                    "error": f"skipped: predicted {guess:.0f} s > {left:.0f} s left of the budget",
                }
            )
            print(f"{frames} frames: {points[-1]['error']}", file=sys.stderr, flush=True)
            continue
        records = bench_records(args.work, frames, args.size)
        tokens = prompt_tokens(model, records, frames, args.size)
        run_dir = args.work / f"run_f{frames}"
        overrides = rl_overrides(model, records, frames, run_dir, args.steps, args, {})
        result = run_point(
            overrides, args.threads, limit_kib, int(args.reserve_gib * 2**20), max(left, 1.0)
        )
        points.append({"frames": frames, "prompt_tokens": tokens, **result})
        summary = (
            f"{result[f'{args.clock}_step_s']:.1f} {args.clock} s/step"
            if result["ok"]
            else result["error"]
        )
        print(
            f"{frames} frames: {summary}, peak RSS {result['peak_rss_mib'] / 1024:.2f} GiB, "
            f"{result['wall_s']:.0f} s wall",
            file=sys.stderr,
            flush=True,
        )
        save(args, points, started, complete=False)  # a partial run keeps its points
        if not result["ok"]:
            break  # larger counts need more memory and time still
    fitted = fits(points, args.clock, args.limit_gib * 1024)
    print(table(points, args.clock))
    largest = max((p["frames"] for p in points if p["ok"]), default=None)
    print(f"\nlargest frame count measured to fit in {args.limit_gib:g} GiB: {largest}")
    if "memory_mib" in fitted:
        memory = fitted["memory_mib"]
        print(
            f"memory: {memory['intercept'] / 1024:.2f} GiB + {memory['per_frame']:.3f} MiB/frame "
            f"(power fit ~ frames^{fitted['memory_power']['k']:.2f}); "
            f"reaches {args.limit_gib:g} GiB at ~{fitted.get('frames_at_limit', float('nan')):,.0f} "
            f"frames (cap {MAX_FRAMES_LIMIT})"
        )
        print(
            f"time: ~ frames^{fitted['time_s']['k']:.2f} over {fitted['time_s']['over_frames']}; "
            "pairwise exponents "
            + ", ".join(
                f"{e['frames'][0]}->{e['frames'][1]}: {e['k']:.2f}"
                for e in fitted["time_exponents"]
            )
        )
    save(args, points, started, complete=True)
    plot(
        points,
        fitted,
        args.plot,
        args.clock,
        args.limit_gib,
        f"one RL step (all on), n={args.n}, {args.size}px frames "
        f"({tokens_per_frame(args.size)} tokens/frame), LM {args.hidden}x{args.layers}, "
        f"{args.clock} time, {args.threads or 'default'} thread(s)",
    )
    print(f"\nwrote {args.out} and {args.plot} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
