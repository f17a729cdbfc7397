"""Compute efficiency (MFU) of the RL update's forward + backward on a ~75M-parameter
Qwen2.5-VL language model, against this machine's fp32 matmul peak measured in the run.

    python benchmarks/mfu.py --prompt-length 2048 --n 8 --response-length 256

The measured step is what one update micro-batch does (src/longrl/train/update.py):
`response_log_probs` with group prefix sharing (the prompt runs once, its KV cache is
repeated n ways, the n responses attend to it; log-probs and entropy over the vocab),
the PPO-clip loss, token-mean aggregation, `backward()`. Inputs: one group per prompt,
the prompt given as embeddings with 3-D positions (as from the video-embedding cache:
no vision tower in the step), n responses of R tokens (all real, no stop token).

FLOPs, counted analytically (multiply-adds x 2), per group:

  T      = P + n (R - 1)           token-forwards through the layers (the last response
                                   token predicts nothing scored, so it is not fed)
  dense  = 6 N_layers T            the layers' matmul weights, N_layers = L (d hq +
                                   2 d hkv + hq d + 3 d f): forward 2, backward 4
                                   (input and weight gradients)
         + 6 d V (1 + n (R - 1))   the LM head: the prompt's last position once (its
                                   logits are shared by the n samples) and the responses'
  attn   = 12 L hq pairs           QK^T and PV: 4 hq per query-key pair forward, 8 backward
  pairs  = P (P + 1) / 2           the prompt, causal
         + n [(R - 1) P + (R - 1) R / 2]   each response token: the prompt + its own past

(d hidden, hq = heads x head_dim, hkv = kv heads x head_dim, f intermediate, V vocab,
L layers; elementwise work, norms, softmaxes are not counted, as usual for MFU.) These
are the FLOPs the step needs with prefix sharing: without it every sample would run
the prompt (n x P token-forwards and n x the prompt's attention). Cross-check:
torch.utils.flop_counter.FlopCounterMode, with formulas registered here for the CPU
flash-attention kernels (it only knows the CUDA ones), must equal the analytic count
in its own convention: dense the same; attention over full rectangles (P x P for the
causal prompt, n (R - 1) x (P + R - 1) for the masked responses) and a backward of 5
matrix products (it counts the recomputation of QK^T), i.e. 14 L hq rectangles.

Peak: the median FLOP/s of torch.mm on square fp32 matrices (--peak-sizes), before and
after the steps, at the same thread count; the peak is the largest median.
MFU = needed FLOPs / step time / peak. Two clocks: the process's CPU time (default;
steady on a machine shared with other jobs; with --threads 1 it is the time the one
thread ran) and wall time (`--clock wall`, for an idle machine). A torch.profiler run
of one step gives the top operators by self CPU time and the time per category.
Prints a summary and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm"}
COPY_OPS = {
    "aten::copy_",
    "aten::cat",
    "aten::clone",
    "aten::index_select",
    "aten::repeat_interleave",
    "aten::index",
    "aten::fill_",
    "aten::zero_",
    "aten::slice_backward",
    "aten::embedding_dense_backward",
}
VOCAB_OPS = {
    "aten::_log_softmax",
    "aten::_log_softmax_backward_data",
    "aten::gather",
    "aten::scatter_add_",
}


def model_dir(root: Path, args) -> Path:
    """A Qwen2.5-VL (or Qwen2) checkpoint of the requested size, built once under `root`."""
    from longrl.models.tiny import build_tiny_checkpoint

    name = (
        f"{args.kind}_h{args.hidden}_l{args.layers}_a{args.heads}_kv{args.kv_heads}"
        f"_f{args.intermediate}"
    )
    path = root / name
    if not (path / "config.json").exists():
        build_tiny_checkpoint(
            path,
            kind=args.kind,
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            num_key_value_heads=args.kv_heads,
            intermediate_size=args.intermediate,
            max_position_embeddings=max(32768, args.prompt_length + args.response_length),
        )
    return path


def text_config(model):
    return getattr(model.config, "text_config", None) or model.config


def analytic_flops(config, P: int, n: int, R: int, groups: int) -> dict:
    """The step's FLOPs: needed, and in FlopCounterMode's convention (module docstring)."""
    d, L, f = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    V = config.vocab_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    hq = config.num_attention_heads * head_dim
    hkv = config.num_key_value_heads * head_dim
    n_layer = d * hq + 2 * d * hkv + hq * d + 3 * d * f
    tokens = P + n * (R - 1)
    # The first layer's input gradient is needed even for embeddings given without
    # gradient: it carries the input norm's weight gradient.
    dense = 6 * L * n_layer * tokens + 6 * d * V * (1 + n * (R - 1))
    pairs = P * (P + 1) // 2 + n * ((R - 1) * P + (R - 1) * R // 2)
    rectangles = P * P + n * (R - 1) * (P + R - 1)
    return {
        "n_layer_params": n_layer,
        "matmul_params": L * n_layer + d * V,
        "token_forwards": tokens,
        "dense": groups * dense,
        "attention_pairs": groups * pairs,
        "attention": groups * 12 * L * hq * pairs,
        "attention_counter_convention": groups * 14 * L * hq * rectangles,
        "needed": groups * (dense + 12 * L * hq * pairs),
        "counter_convention": groups * (dense + 14 * L * hq * rectangles),
        "naive_token_forwards": n * (P + R),
    }


def register_cpu_attention_flops() -> None:
    """FlopCounterMode counts SDPA on CUDA kernels only; count the CPU flash kernels too
    (torch's own formulas: full rectangles, causal masking not discounted)."""
    from torch.utils import flop_counter

    aten = torch.ops.aten
    forward = aten._scaled_dot_product_flash_attention_for_cpu
    backward = aten._scaled_dot_product_flash_attention_for_cpu_backward
    registry = flop_counter.flop_registry
    if forward.default in registry or forward in registry:
        return

    @flop_counter.register_flop_formula(forward)
    def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    @flop_counter.register_flop_formula(backward)
    def _backward(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(
            grad_out_shape, query_shape, key_shape, value_shape
        )


def make_inputs(model, args):
    from longrl.rollout.engine import PromptBatch, text_position_ids

    generator = torch.Generator().manual_seed(0)
    vocab = text_config(model).vocab_size
    P, n, R, B = args.prompt_length, args.n, args.response_length, args.groups
    prompt_ids = torch.randint(0, vocab, (B, P), generator=generator)
    mask = torch.ones(B, P, dtype=torch.long)
    positions = text_position_ids(mask)
    if args.kind == "qwen2_5_vl":
        # Embeddings from the cache: no gradient, 3-D positions (all axes equal here).
        with torch.no_grad():
            embeds = model.get_input_embeddings()(prompt_ids)
        prompts = PromptBatch(
            attention_mask=mask,
            inputs_embeds=embeds,
            position_ids=positions[None].expand(3, -1, -1),
        )
    else:
        prompts = PromptBatch(attention_mask=mask, input_ids=prompt_ids, position_ids=positions)
    responses = torch.randint(0, vocab, (B * n, R), generator=generator)
    response_mask = torch.ones(B * n, R, dtype=torch.long)
    advantages = torch.randn(B * n, 1, generator=generator).expand(-1, R)
    return prompts, responses, response_mask, advantages


def unfused_token_stats(logits, ids, *, temperature=1.0, with_entropy=False):
    """The log_softmax formulation the training forward used before
    longrl.train.token_stats (for --unfused-vocab: the before/after figure)."""
    scale = temperature if temperature > 0 else 1.0
    log_softmax = torch.log_softmax(logits.float() / scale, dim=-1)
    log_probs = log_softmax.gather(-1, ids[..., None]).squeeze(-1)
    entropy = -(log_softmax.exp() * log_softmax).sum(-1) if with_entropy else None
    return log_probs, entropy


def make_step(model, args, share_prefix: bool = True):
    from longrl.algos.aggregate import aggregate_loss
    from longrl.algos.policy_loss import ppo_clip_loss
    from longrl.train.logprobs import response_log_probs

    prompts, responses, response_mask, advantages = make_inputs(model, args)
    with torch.no_grad():
        old = response_log_probs(
            model, prompts, responses, response_mask, n=args.n, share_prefix=True
        ).log_probs

    def step() -> None:
        model.zero_grad(set_to_none=True)
        current = response_log_probs(
            model,
            prompts,
            responses,
            response_mask,
            n=args.n,
            temperature=1.0,
            share_prefix=share_prefix,
            with_entropy=True,
        )
        loss = ppo_clip_loss(current.log_probs, old, advantages, response_mask).per_token_loss
        loss = aggregate_loss(loss, response_mask, "token-mean")
        loss.backward()

    return step


def clocked(fn) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def matmul_peak(sizes: list[int], repeats: int) -> dict[int, list[dict[str, float]]]:
    """FLOP/s of torch.mm at each size, `repeats` calls each (after one warm-up)."""
    out: dict[int, list[dict[str, float]]] = {}
    generator = torch.Generator().manual_seed(0)
    for size in sizes:
        a = torch.randn(size, size, generator=generator)
        b = torch.randn(size, size, generator=generator)
        c = torch.empty(size, size)
        torch.mm(a, b, out=c)
        flops = 2 * size**3
        calls = max(1, int(2e10 // flops))  # ~20 GFLOP per timed call
        rates = []
        for _ in range(repeats):
            times = clocked(
                lambda a=a, b=b, c=c, calls=calls: [torch.mm(a, b, out=c) for _ in range(calls)]
            )
            rates.append({k: calls * flops / v for k, v in times.items()})
        out[size] = rates
    return out


def peak_of(measurements: list[dict[int, list[dict[str, float]]]], clock: str) -> tuple[float, int]:
    best, best_size = 0.0, 0
    sizes = measurements[0].keys()
    for size in sizes:
        rates = [r[clock] for m in measurements for r in m[size]]
        median = statistics.median(rates)
        if median > best:
            best, best_size = median, size
    return best, best_size


def count_flops(step) -> dict[str, int]:
    from torch.utils.flop_counter import FlopCounterMode

    register_cpu_attention_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    by_op = {str(op): int(v) for op, v in counter.get_flop_counts()["Global"].items()}
    return {"total": int(counter.get_total_flops()), "by_op": by_op}


def category(name: str) -> str:
    if name in MATMUL_OPS:
        return "matmul"
    if "scaled_dot_product" in name:
        return "attention kernels"
    if name in COPY_OPS:
        return "copies/fills"
    if name in VOCAB_OPS:
        return "log-softmax/gather over vocab"
    if name.startswith("aten::"):
        return "elementwise/reductions/other aten"
    return "autograd/python overhead"


def profile_step(step, top: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    top_ops = [
        {
            "op": e.key,
            "calls": e.count,
            "self_cpu_s": e.self_cpu_time_total / 1e6,
            "share": e.self_cpu_time_total / total,
        }
        for e in rows[:top]
    ]
    categories: dict[str, float] = {}
    for e in events:
        name = category(e.key)
        categories[name] = categories.get(name, 0.0) + e.self_cpu_time_total
    shares = {k: v / total for k, v in sorted(categories.items(), key=lambda kv: -kv[1])}
    return {"total_self_cpu_s": total / 1e6, "top_ops": top_ops, "categories": shares}


def plot(result: dict, clock: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profile = result["profile"]
    figure, axes = plt.subplots(
        1, 2 if profile else 1, figsize=(12 if profile else 5, 4.5), squeeze=False
    )
    left = axes[0, 0]
    figures = result[clock]
    bars = {"achieved\n(needed FLOPs)": figures["achieved_flops"]}
    if "naive_step_s" in figures:
        # Same needed FLOPs over the slower step: what prefix sharing buys, in the same units.
        bars["achieved,\nno prefix sharing"] = result["flops"]["needed"] / figures["naive_step_s"]
    bars[f"fp32 mm peak\n({figures['peak_size']}x{figures['peak_size']})"] = figures["peak_flops"]
    drawn = left.bar(list(bars), [v / 1e9 for v in bars.values()], color="C0")
    drawn[-1].set_color("grey")
    left.bar_label(drawn, [f"{v / figures['peak_flops']:.1%}" for v in bars.values()])
    left.margins(y=0.1)
    left.axhline(0.4 * figures["peak_flops"] / 1e9, color="red", linestyle="--", label="40% goal")
    left.set_ylabel(f"GFLOP/s ({clock} time)")
    left.set_title(f"MFU {figures['mfu']:.1%} (label: share of peak)")
    left.legend()
    if profile:
        shares = profile["categories"]
        right = axes[0, 1]
        # Largest at the top, as in the printed table.
        drawn = right.barh(list(shares)[::-1], [100 * v for v in list(shares.values())[::-1]])
        right.bar_label(drawn, fmt="%.1f%%")
        right.margins(x=0.15)
        right.set_xlabel("% of self CPU time")
        right.set_title(f"profile of one step ({profile['total_self_cpu_s']:.2f} CPU s)")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=("qwen2_5_vl", "qwen2"), default="qwen2_5_vl")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--prompt-length", type=int, default=2048)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--response-length", type=int, default=256)
    parser.add_argument("--groups", type=int, default=1, help="prompts per micro-batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps (after a warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--peak-sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--peak-repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="operators in the profile table")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--also-naive", action="store_true", help="also time the step without prefix sharing"
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="resize the vocabulary (tied embeddings) to this size, e.g. 151936 as Qwen2.5",
    )
    parser.add_argument(
        "--unfused-vocab",
        action="store_true",
        help="log-probs/entropy by log_softmax over the vocabulary, as before token_stats",
    )
    parser.add_argument("--models", type=Path, default=Path("runs/benchmarks/mfu_models"))
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/mfu.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)

    from longrl.models.load import load_model
    from longrl.models.tiny import count_parameters

    model = load_model(model_dir(args.models, args)).train()
    if args.vocab_size:
        # A real tokenizer's vocabulary (Qwen2.5: 151,936) on the tiny one's model: the
        # LM head and the log-softmax over the vocabulary grow to their real size.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model.resize_token_embeddings(args.vocab_size, mean_resizing=False)
    if args.unfused_vocab:
        import longrl.train.logprobs

        longrl.train.logprobs.token_log_probs_and_entropy = unfused_token_stats
    config = text_config(model)
    lm_params = sum(p.numel() for name, p in model.named_parameters() if "visual" not in name)
    flops = analytic_flops(
        config,
        args.prompt_length,
        args.n,
        args.response_length,
        args.groups,
    )
    step = make_step(model, args)
    counted = count_flops(step)
    agreement = counted["total"] / flops["counter_convention"]

    peaks = [matmul_peak(args.peak_sizes, args.peak_repeats)]
    step()  # warm-up
    steps = [clocked(step) for _ in range(args.repeats)]
    peaks.append(matmul_peak(args.peak_sizes, args.peak_repeats))
    naive = None
    if args.also_naive:
        naive_step = make_step(model, args, share_prefix=False)
        naive_step()
        naive = [clocked(naive_step) for _ in range(args.repeats)]
    profile = None if args.no_profile else profile_step(step, args.top)

    result: dict = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_end": os.getloadavg(),
        "parameters": count_parameters(model),
        "language_model_parameters": lm_params,
        "flops": flops,
        "flop_counter": counted,
        "flop_counter_over_analytic": agreement,
        "steps": steps,
        "peak_mm": {str(size): [m[size] for m in peaks] for size in args.peak_sizes},
        "naive_steps": naive,
        "profile": profile,
    }
    for clock in ("cpu", "wall"):
        step_s = statistics.median(s[clock] for s in steps)
        peak, size = peak_of(peaks, clock)
        achieved = flops["needed"] / step_s
        result[clock] = {
            "step_s": step_s,
            "achieved_flops": achieved,
            "peak_flops": peak,
            "peak_size": size,
            "mfu": achieved / peak,
        }
        if naive:
            naive_s = statistics.median(s[clock] for s in naive)
            result[clock]["naive_step_s"] = naive_s
            result[clock]["naive_mfu_needed"] = flops["needed"] / naive_s / peak

    clock = result[args.clock]
    print(
        f"{args.kind} LM {lm_params / 1e6:.1f}M parameters (hidden {args.hidden} x "
        f"{args.layers} layers, {args.heads} heads / {args.kv_heads} kv, ffn "
        f"{args.intermediate}, vocab {config.vocab_size}); {args.groups} group(s) of n="
        f"{args.n}, prompt {args.prompt_length}, responses {args.response_length}; "
        f"{args.threads} thread(s), {args.clock} clock, median of {args.repeats} steps"
    )
    print(
        f"FLOPs per step, needed: {flops['needed'] / 1e12:.3f} T (dense "
        f"{flops['dense'] / 1e12:.3f} T, attention {flops['attention'] / 1e12:.3f} T); "
        f"FlopCounterMode {counted['total'] / 1e12:.4f} T = {agreement:.6f} x the analytic "
        f"count in its convention ({flops['counter_convention'] / 1e12:.4f} T)"
    )
    print(
        f"step {clock['step_s']:.2f} s -> {clock['achieved_flops'] / 1e9:.1f} GFLOP/s; "
        f"fp32 mm peak {clock['peak_flops'] / 1e9:.1f} GFLOP/s (size {clock['peak_size']}); "
        f"MFU {clock['mfu']:.1%}"
    )
    if naive:
        print(
            f"without prefix sharing: step {clock['naive_step_s']:.2f} s, "
            f"MFU of the needed FLOPs {clock['naive_mfu_needed']:.1%}"
        )
    print(f"goal MFU >= 40%: {'met' if clock['mfu'] >= 0.4 else 'MISSED'}")
    if profile:
        print("\nprofile (one step, self CPU time):")
        print("| category | share |\n| --- | --- |")
        for name, share in profile["categories"].items():
            print(f"| {name} | {share:.1%} |")
        print("\n| op | calls | self CPU s | share |\n| --- | --- | --- | --- |")
        for op in profile["top_ops"]:
            print(f"| {op['op']} | {op['calls']} | {op['self_cpu_s']:.2f} | {op['share']:.1%} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot_path = args.out.with_suffix(".png")
    plot(
        result,
        args.clock,
        plot_path,
        f"{args.kind} LM {lm_params / 1e6:.1f}M params\n{args.groups} group(s) of n={args.n}, "
        f"prompt {args.prompt_length}, responses {args.response_length}, "
        f"{args.threads} thread(s), median of {args.repeats} steps",
    )
    print(f"wrote {args.out} and {plot_path} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
