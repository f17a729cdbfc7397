"""Rollout engines side by side: built-in (prefix-shared KV cache) vs vLLM vs transformers
`generate`, one group of n samples per prompt, on a tiny Qwen2 checkpoint.

Every engine samples (temperature 1) n responses of exactly --new-tokens tokens (no stop
token) to the same fresh random prompts; each repeat uses new prompts, so vLLM's prefix
cache only ever shares a prompt within its own group. Prints time ratios measured in this
run and writes JSON. Needs `make install-vllm`.

    python benchmarks/vllm_rollout.py --prompt-lengths 512 4096 16384 --n 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from longrl.rollout.engine import PromptBatch, TorchRolloutEngine
from longrl.rollout.sampling import SamplingParams


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


def median_seconds(fn, repeats: int) -> float:
    fn(0)  # warm-up, excluded
    times = []
    for repeat in range(1, repeats + 1):
        start = time.perf_counter()
        fn(repeat)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def prompts_for(length: int, batch: int, vocab: int, seed: int) -> PromptBatch:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=generator)
    return PromptBatch(attention_mask=torch.ones_like(ids), input_ids=ids)


def measure(engines, model, length, args, vocab) -> dict:
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.new_tokens, seed=0)

    def run_engine(name):
        def run(repeat):
            batch = prompts_for(length, args.batch, vocab, seed=1000 * length + repeat)
            out = engines[name].generate(batch, params)
            assert int(out.response_mask.sum()) == args.batch * args.n * args.new_tokens

        return run

    def run_transformers(repeat):
        batch = prompts_for(length, args.batch, vocab, seed=1000 * length + repeat)
        with torch.no_grad():
            model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                do_sample=True,
                num_return_sequences=args.n,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=0,
                eos_token_id=None,
            )

    row = {"prompt_length": length, "n": args.n, "batch": args.batch}
    row["builtin_s"] = median_seconds(run_engine("builtin"), args.repeats)
    row["vllm_s"] = median_seconds(run_engine("vllm"), args.repeats)
    if length <= args.max_transformers_length:
        row["transformers_s"] = median_seconds(run_transformers, args.repeats)
        row["transformers_over_builtin"] = row["transformers_s"] / row["builtin_s"]
        row["transformers_over_vllm"] = row["transformers_s"] / row["vllm_s"]
    row["builtin_over_vllm"] = row["builtin_s"] / row["vllm_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt-lengths", type=int, nargs="+", default=[512, 4096, 16384])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2, help="prompts per rollout call")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--max-transformers-length",
        type=int,
        default=1 << 30,
        help="skip transformers generate above this prompt length (it prefills n copies)",
    )
    parser.add_argument("--vllm-compile", action="store_true", help="vLLM without enforce_eager")
    parser.add_argument("--out", default="runs/benchmarks/vllm_rollout.json")
    args = parser.parse_args()

    from longrl.models.load import load_model
    from longrl.rollout.vllm_engine import VllmRolloutEngine

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vllm_rollout_", dir=out.parent))
    path = build_checkpoint(work / "model", args.hidden, args.layers)
    model = load_model(path).eval()
    vocab = model.config.vocab_size
    start = time.perf_counter()
    vllm_engine = VllmRolloutEngine(
        model,
        path,
        pad_token_id=0,
        eos_token_ids=(),
        max_model_len=max(args.prompt_lengths) + args.new_tokens,
        work_dir=work / "vllm",
        enforce_eager=not args.vllm_compile,
    )
    startup_s = time.perf_counter() - start
    engines = {
        # eos id out of range: every response runs the full new_tokens.
        "builtin": TorchRolloutEngine(model, pad_token_id=0, eos_token_ids=(-1,)),
        "vllm": vllm_engine,
    }
    with torch.no_grad():
        for p in model.parameters():  # an "update", then the in-place sync it needs
            p.mul_(1.001)
    start = time.perf_counter()
    vllm_engine.sync_weights(model)
    sync_s = time.perf_counter() - start

    rows = [measure(engines, model, length, args, vocab) for length in args.prompt_lengths]
    vllm_engine.close()
    print(
        f"n={args.n}, {args.batch} prompts per call, {args.new_tokens} new tokens, Qwen2 hidden "
        f"{args.hidden} x {args.layers} layers; vLLM start {startup_s:.1f} s, weight sync "
        f"{sync_s:.3f} s; median of {args.repeats} after a warm-up"
    )
    print(
        "| prompt | built-in s | vLLM s | transformers s | tf/built-in | tf/vLLM | built-in/vLLM |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        tf = row.get("transformers_s")
        cells = ["—", "—", "—"]
        if tf is not None:
            cells = [
                f"{tf:.2f}",
                f"{row['transformers_over_builtin']:.2f}x",
                f"{row['transformers_over_vllm']:.2f}x",
            ]
        print(
            f"| {row['prompt_length']} | {row['builtin_s']:.2f} | {row['vllm_s']:.2f} | "
            f"{cells[0]} | {cells[1]} | {cells[2]} | {row['builtin_over_vllm']:.2f}x |"
        )
    result = {"args": vars(args), "startup_s": startup_s, "sync_s": sync_s, "rows": rows}
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
