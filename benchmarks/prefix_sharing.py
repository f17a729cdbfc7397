"""Group prefix sharing vs naive: rollout and training log-prob forward, side by side.

One group of n responses to one long prompt (the video), on a small Qwen2
language model. Shared: the prompt is prefilled/run once and its KV cache is
repeated n ways. Naive: every sample runs the whole prompt. Prints time ratios
(naive / shared) measured in the same run, and writes JSON and a PNG.

Both clocks are recorded; the table reads `--clock` (CPU seconds of this process
by default, which stay comparable when other jobs share the machine; use it with
`--threads 1`, and `--clock wall` on an idle machine).

    python benchmarks/prefix_sharing.py --prompt-lengths 512 2048 8192 --n 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from longrl.rollout.engine import PromptBatch, TorchRolloutEngine
from longrl.rollout.sampling import SamplingParams
from longrl.train.logprobs import response_log_probs


def build_model(hidden: int, layers: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=1024,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=65536,
    )
    return Qwen2ForCausalLM(config).eval()


def median_seconds(fn, repeats: int) -> dict[str, float]:
    """Median wall and CPU seconds of `repeats` calls after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return {"wall": statistics.median(wall), "cpu": statistics.median(cpu)}


def measure(model, prompt_length: int, n: int, new_tokens: int, repeats: int) -> dict:
    """Seconds (`<phase>_<label>_<clock>_s`) and naive/shared ratios (`<clock>_<phase>_speedup`)."""
    ids = torch.randint(3, 1024, (1, prompt_length))
    prompts = PromptBatch(attention_mask=torch.ones_like(ids), input_ids=ids)
    # eos id out of range: every response runs the full new_tokens.
    params = SamplingParams(n=n, max_new_tokens=new_tokens, seed=0)
    engines = {
        share: TorchRolloutEngine(model, pad_token_id=0, eos_token_ids=(-1,), share_prefix=share)
        for share in (True, False)
    }
    with torch.no_grad():
        out = engines[True].generate(prompts, params)
    row = {"prompt_length": prompt_length, "n": n, "new_tokens": new_tokens}
    for share in (True, False):
        label = "shared" if share else "naive"
        with torch.no_grad():
            rollout = median_seconds(lambda e=engines[share]: e.generate(prompts, params), repeats)

        def train_pass(share=share):
            model.zero_grad(set_to_none=True)
            result = response_log_probs(
                model, prompts, out.response_ids, out.response_mask, n=n, share_prefix=share
            )
            result.log_probs.sum().backward()

        train = median_seconds(train_pass, repeats)
        for clock in ("wall", "cpu"):
            row[f"rollout_{label}_{clock}_s"] = rollout[clock]
            row[f"train_{label}_{clock}_s"] = train[clock]
    for clock in ("wall", "cpu"):
        for phase in ("rollout", "train"):
            naive, shared = row[f"{phase}_naive_{clock}_s"], row[f"{phase}_shared_{clock}_s"]
            row[f"{clock}_{phase}_speedup"] = naive / shared
    return row


def plot(rows: list[dict], path: Path, clock: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    lengths = [row["prompt_length"] for row in rows]
    for phase, label in (("rollout", "rollout"), ("train", "training fwd + bwd")):
        speedups = [row[f"{clock}_{phase}_speedup"] for row in rows]
        axis.plot(lengths, speedups, marker="o", label=label)
    axis.axhline(1.0, color="black", linewidth=0.5)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("prompt tokens")
    axis.set_ylabel(f"naive / shared ({clock} seconds)")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt-lengths", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", default="runs/benchmarks/prefix_sharing.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_model(args.hidden, args.layers)
    rows = [measure(model, L, args.n, args.new_tokens, args.repeats) for L in args.prompt_lengths]
    title = (
        f"n={args.n}, {args.new_tokens} new tokens, hidden {args.hidden} x {args.layers} layers, "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(title)
    print(
        f"| prompt | rollout naive/shared ({args.clock}) | train fwd+bwd naive/shared ({args.clock}) |"
    )
    print("| --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['prompt_length']} | {row[f'{args.clock}_rollout_speedup']:.2f}x | "
            f"{row[f'{args.clock}_train_speedup']:.2f}x |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {**vars(args), "torch_threads": torch.get_num_threads()}
    out.write_text(json.dumps({"args": settings, "rows": rows}, indent=1))
    plot(rows, out.with_suffix(".png"), args.clock, title)
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
