"""Rollout throughput: the built-in engine vs transformers `generate` (and vLLM where
installed), groups of n samples per prompt, on a tiny Qwen2 checkpoint.

    python benchmarks/rollout_throughput.py --prompt-lengths 512 4096 16384 --n 8

Engines (`--engines`, default all; `vllm` is left out when vLLM is not installed):

  builtin         the built-in engine: each prompt prefilled once, its KV cache kept
                  once per group; decode steps attend to it once per group
                  (longrl.rollout.prefix_attention)
  builtin-repeat  the built-in engine with the prompt's cache repeated n ways
                  (`prefix_attention=False`; what the engine did before)
  transformers    `model.generate(num_return_sequences=n)`: n copies of each prompt
                  prefilled, n copies of its cache
  vllm            vLLM in-process (eager, prefix caching on, whole-prompt prefill)

Every engine samples (temperature 1, no top-k/top-p) n responses of exactly
--new-tokens tokens (no stop token) to the same fresh random prompts; each repeat
draws new prompts, so no engine reuses a prompt across calls. Each engine is warmed
up once on a short prompt; then, per prompt length, the engines run in turn (the
order rotating between repeats) and the median over --repeats calls is kept.

Two clocks per call: wall time and the process's CPU time (all threads). On a machine
shared with other jobs the CPU time is the steadier measure of the work done (the
default for the table; `--clock wall` on an idle machine); `--threads 1` also avoids
threads waiting on each other's preempted partner. Throughput is generated tokens
(prompts x n x new tokens) per second. The built-in engines' prompt prefill is also
timed alone (the same model call in both), so their decode time is the rest of the
call. Prints the tables, writes JSON and a PNG plot.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from longrl.rollout.engine import PromptBatch, TorchRolloutEngine
from longrl.rollout.sampling import SamplingParams

ENGINES = ("builtin", "builtin-repeat", "transformers", "vllm")
LABELS = {
    "builtin": "built-in",
    "builtin-repeat": "built-in, repeated cache",
    "transformers": "transformers generate",
    "vllm": "vLLM",
}
COLORS = {
    "builtin": "tab:blue",
    "builtin-repeat": "tab:cyan",
    "transformers": "tab:orange",
    "vllm": "tab:green",
}
WARMUP_PROMPT = 64
PREFILL = "prefill"


def build_checkpoint(directory: Path, hidden: int, layers: int) -> Path:
    from longrl.models.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(
        directory,
        kind="qwen2",
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=2,
        intermediate_size=hidden * 3,
        max_position_embeddings=65536,
    )


def prompts_for(length: int, batch: int, vocab: int, seed: int) -> PromptBatch:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=generator)
    return PromptBatch(attention_mask=torch.ones_like(ids), input_ids=ids)


class Runners:
    """One callable per engine: generate for a PromptBatch, check the token count."""

    def __init__(self, model, engines: list[str], args, vllm_engine=None) -> None:
        self.model = model
        self.args = args
        self.params = SamplingParams(
            n=args.n, temperature=1.0, max_new_tokens=args.new_tokens, seed=0
        )
        # eos id out of range: every response runs the full new_tokens.
        self.builtin = {
            "builtin": TorchRolloutEngine(model, pad_token_id=0, eos_token_ids=(-1,)),
            "builtin-repeat": TorchRolloutEngine(
                model, pad_token_id=0, eos_token_ids=(-1,), prefix_attention=False
            ),
        }
        self.vllm = vllm_engine
        self.engines = engines

    def expected_tokens(self, batch: PromptBatch) -> int:
        return batch.batch_size * self.args.n * self.args.new_tokens

    def __call__(self, name: str, batch: PromptBatch) -> None:
        if name == PREFILL:  # the built-in engines' prompt prefill alone (once per group)
            with torch.no_grad():
                self.model(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    use_cache=True,
                    logits_to_keep=1,
                )
            return
        if name in self.builtin or name == "vllm":
            engine = self.vllm if name == "vllm" else self.builtin[name]
            out = engine.generate(batch, self.params)
            assert int(out.response_mask.sum()) == self.expected_tokens(batch)
            return
        with torch.no_grad():
            out = self.model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                do_sample=True,
                temperature=1.0,
                num_return_sequences=self.args.n,
                max_new_tokens=self.args.new_tokens,
                min_new_tokens=self.args.new_tokens,
                pad_token_id=0,
                eos_token_id=None,
            )
        generated = out[:, batch.input_ids.shape[1] :]
        assert generated.numel() == self.expected_tokens(batch)


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_length(runners: Runners, length: int, vocab: int, args) -> dict:
    engines = [e for e in runners.engines if not _skipped(e, length, args)]
    if any(e.startswith("builtin") for e in engines):
        engines.append(PREFILL)
    calls: dict[str, dict[str, list[float]]] = {e: {"wall": [], "cpu": []} for e in engines}
    for repeat in range(args.repeats):
        batch = prompts_for(length, args.batch, vocab, seed=1000 * length + repeat)
        shift = repeat % len(engines)
        for name in engines[shift:] + engines[:shift]:
            wall, cpu = timed(lambda name=name, batch=batch: runners(name, batch))
            calls[name]["wall"].append(wall)
            calls[name]["cpu"].append(cpu)
            print(f"  {length:>6} {name:<15} wall {wall:8.2f} s  cpu {cpu:8.2f} s", flush=True)
    tokens = args.batch * args.n * args.new_tokens
    row: dict = {"prompt_length": length, "generated_tokens": tokens, "engines": {}}
    prefill = calls.pop(PREFILL, None)
    if prefill is not None:
        # Built-in time = prefill (the same model call in both built-in variants) + decode.
        row["builtin_prefill"] = {
            f"{clock}_s": statistics.median(prefill[clock]) for clock in ("wall", "cpu")
        }
    for name, times in calls.items():
        entry = {"calls_wall_s": times["wall"], "calls_cpu_s": times["cpu"]}
        for clock in ("wall", "cpu"):
            seconds = statistics.median(times[clock])
            entry[f"{clock}_s"] = seconds
            entry[f"{clock}_tokens_per_s"] = tokens / seconds
            if prefill is not None and name.startswith("builtin"):
                entry[f"{clock}_decode_s"] = seconds - row["builtin_prefill"][f"{clock}_s"]
        row["engines"][name] = entry
    for clock in ("wall", "cpu"):
        builtin = row["engines"].get("builtin")
        if builtin is None:
            continue
        # builtin speedup over each engine = its time / builtin's time (same tokens).
        row[f"{clock}_builtin_speedup"] = {
            name: entry[f"{clock}_s"] / builtin[f"{clock}_s"]
            for name, entry in row["engines"].items()
            if name != "builtin"
        }
    return row


def _skipped(engine: str, length: int, args) -> bool:
    return engine == "transformers" and length > args.max_transformers_length


def table(rows: list[dict], engines: list[str], clock: str) -> str:
    others = [e for e in engines if e != "builtin"]
    head = ["prompt tokens"] + [f"{LABELS[e]} tok/s" for e in engines]
    if "builtin" in engines:
        head += [f"built-in / {LABELS[e]}" for e in others]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [f"{row['prompt_length']}"]
        for name in engines:
            entry = row["engines"].get(name)
            cells.append(f"{entry[f'{clock}_tokens_per_s']:.1f}" if entry else "—")
        if "builtin" in engines:
            speedups = row.get(f"{clock}_builtin_speedup", {})
            cells += [f"{speedups[e]:.2f}x" if e in speedups else "—" for e in others]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def decode_table(rows: list[dict], clock: str) -> str | None:
    """Built-in engines: prefill, and the rest of the call (decode), per prompt length."""
    if not any("builtin_prefill" in row for row in rows):
        return None
    lines = [
        "| prompt tokens | prefill s | decode s, built-in | decode s, repeated cache | ratio |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if "builtin_prefill" not in row:
            continue
        decode = [
            row["engines"].get(name, {}).get(f"{clock}_decode_s")
            for name in ("builtin", "builtin-repeat")
        ]
        cells = [f"{d:.2f}" if d is not None else "—" for d in decode]
        ratio = f"{decode[1] / decode[0]:.2f}x" if None not in decode and decode[0] > 0 else "—"
        lines.append(
            f"| {row['prompt_length']} | {row['builtin_prefill'][f'{clock}_s']:.2f} | "
            f"{cells[0]} | {cells[1]} | {ratio} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], engines: list[str], path: Path, clock: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in engines:
        points = [
            (row["prompt_length"], row["engines"][name][f"{clock}_tokens_per_s"])
            for row in rows
            if name in row["engines"]
        ]
        if points:
            left.plot(
                *zip(*points, strict=True), marker="o", color=COLORS[name], label=LABELS[name]
            )
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xlabel("prompt tokens")
    left.set_ylabel(f"generated tokens / {clock} s")
    left.set_title("throughput")
    left.legend()
    for name in engines:
        if name == "builtin":
            continue
        points = [
            (row["prompt_length"], row[f"{clock}_builtin_speedup"][name])
            for row in rows
            if name in row.get(f"{clock}_builtin_speedup", {})
        ]
        if points:
            right.plot(
                *zip(*points, strict=True),
                marker="o",
                color=COLORS[name],
                label=f"vs {LABELS[name]}",
            )
    right.axhline(2.0, color="grey", linestyle="--", linewidth=1, label="2x")
    right.axhline(1.0, color="black", linewidth=0.5)
    right.set_xscale("log", base=2)
    right.set_xlabel("prompt tokens")
    right.set_ylabel("built-in speedup (x)")
    right.set_title("built-in engine vs the others")
    right.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt-lengths", type=int, nargs="+", default=[512, 4096, 16384])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2, help="prompts per rollout call")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument(
        "--max-transformers-length",
        type=int,
        default=1 << 30,
        help="skip transformers generate above this prompt length (it prefills n copies)",
    )
    parser.add_argument("--vllm-compile", action="store_true", help="vLLM without enforce_eager")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/rollout_throughput.json"))
    parser.add_argument("--plot", type=Path, default=None, help="PNG (default: --out as .png)")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)

    engines = list(args.engines)
    vllm_note = None
    if "vllm" in engines and importlib.util.find_spec("vllm") is None:
        engines.remove("vllm")
        vllm_note = "vLLM not installed (make install-vllm): its column is left out"
        print(vllm_note)

    from longrl.models.load import load_model

    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rollout_throughput_", dir=args.out.parent))
    path = build_checkpoint(work / "model", args.hidden, args.layers)
    model = load_model(path).eval()
    vocab = model.config.vocab_size
    info: dict = {"threads": args.threads, "torch": torch.__version__}
    vllm_engine = None
    if "vllm" in engines:
        from longrl.rollout.vllm_engine import VllmRolloutEngine

        start = time.perf_counter()
        vllm_engine = VllmRolloutEngine(
            model,
            path,
            pad_token_id=0,
            eos_token_ids=(),
            max_model_len=max([*args.prompt_lengths, WARMUP_PROMPT]) + args.new_tokens,
            work_dir=work / "vllm",
            enforce_eager=not args.vllm_compile,
        )
        info["vllm_startup_s"] = time.perf_counter() - start
        with torch.no_grad():
            for p in model.parameters():  # an "update", then the in-place sync it needs
                p.mul_(1.001)
        start = time.perf_counter()
        vllm_engine.sync_weights(model)
        info["vllm_sync_s"] = time.perf_counter() - start

    runners = Runners(model, engines, args, vllm_engine)
    warm = prompts_for(WARMUP_PROMPT, args.batch, vocab, seed=7)
    for name in engines:
        runners(name, warm)
    info["load_average_start"] = os.getloadavg()
    rows = []
    for length in args.prompt_lengths:
        rows.append(measure_length(runners, length, vocab, args))
    info["load_average_end"] = os.getloadavg()
    if vllm_engine is not None:
        vllm_engine.close()

    title = (
        f"n={args.n}, {args.batch} prompts per call, {args.new_tokens} new tokens, Qwen2 "
        f"hidden {args.hidden} x {args.layers} layers, {args.threads} thread(s), "
        f"{args.clock} clock, median of {args.repeats}"
    )
    print(title)
    if "vllm_startup_s" in info:
        print(f"vLLM start {info['vllm_startup_s']:.1f} s, weight sync {info['vllm_sync_s']:.3f} s")
    print(table(rows, engines, args.clock))
    decode = decode_table(rows, args.clock)
    if decode:
        print(f"\nbuilt-in engines, {args.clock} s per call: prefill + decode")
        print(decode)
    for row in rows:
        speedup = row.get(f"{args.clock}_builtin_speedup", {}).get("transformers")
        if speedup is not None:
            verdict = "met" if speedup >= 2.0 else "MISSED"
            print(
                f"goal built-in >= 2x transformers at {row['prompt_length']}: "
                f"{speedup:.2f}x, {verdict}"
            )
    plot_path = args.plot or args.out.with_suffix(".png")
    plot(rows, engines, plot_path, args.clock, title)
    result = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "engines": engines,
        "info": info,
        "note": vllm_note,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)  # the checkpoint and vLLM's files
    print(f"wrote {args.out} and {plot_path} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
