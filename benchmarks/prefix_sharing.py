"""Group prefix sharing vs naive: rollout and training log-prob forward, side by side.

One group of n responses to one long prompt (the video), on a small Qwen2
language model. Shared: the prompt is prefilled/run once and its KV cache is
repeated n ways. Naive: every sample runs the whole prompt. Prints time ratios
(naive / shared) measured in the same run, and writes JSON.

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


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up, excluded
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model, prompt_length: int, n: int, new_tokens: int, repeats: int) -> dict:
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
            row[f"rollout_{label}_s"] = median_seconds(
                lambda e=engines[share]: e.generate(prompts, params), repeats
            )

        def train_pass(share=share):
            model.zero_grad(set_to_none=True)
            result = response_log_probs(
                model, prompts, out.response_ids, out.response_mask, n=n, share_prefix=share
            )
            result.log_probs.sum().backward()

        row[f"train_{label}_s"] = median_seconds(train_pass, repeats)
    row["rollout_speedup"] = row["rollout_naive_s"] / row["rollout_shared_s"]
    row["train_speedup"] = row["train_naive_s"] / row["train_shared_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt-lengths", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="runs/benchmarks/prefix_sharing.json")
    args = parser.parse_args()

    model = build_model(args.hidden, args.layers)
    rows = [measure(model, L, args.n, args.new_tokens, args.repeats) for L in args.prompt_lengths]
    print(f"n={args.n}, {args.new_tokens} new tokens, hidden {args.hidden} x {args.layers} layers")
    print("| prompt | rollout naive/shared | train fwd+bwd naive/shared |")
    print("| --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['prompt_length']} | {row['rollout_speedup']:.2f}x | "
            f"{row['train_speedup']:.2f}x |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
