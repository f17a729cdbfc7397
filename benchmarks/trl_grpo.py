"""GRPO step time: longrl vs TRL's GRPOTrainer, same tiny Qwen2.5-VL, same video frames.

One prompt per optimizer step, a group of n = 8 sampled replies, the same reward
function, learning rate, reply budget and number of optimizer steps in both; fp32 on
the CPU, no reference model (KL off: TRL beta=0, longrl algorithm.disable_kl), no
vLLM, no gradient checkpointing, the vision tower frozen in both (longrl's default).

longrl gets the video file (`longrl rl`, driven through `run_rl`): it decodes the
sampled frames, encodes the video once, prefills the prompt once per group and
runs the prompt once per group in the update. TRL has no video input, so it gets
the same decoded frames as a list of images (`images` column); every one of its n
copies of the prompt is preprocessed, encoded by the vision tower, prefilled by
`generate` and run through the update. TRL's processor is longrl's torch-only
Qwen2.5-VL processor (transformers' AutoProcessor for it needs torchvision, which
does not import beside the CPU torch) with longrl's data pixel bounds, so an image
is resized exactly like a video frame; it resizes an image's temporal repeat again
where the official torchvision processor copies it (a few % of TRL's step).

Visual tokens. Qwen2.5-VL patches video frames in pairs (temporal_patch_size 2:
T frames -> T/2 temporal patches), while each image is one temporal patch of its
own (the frame repeated). T frames as T images therefore give twice the visual
tokens (and twice the vision-tower patches) of the same T frames as a video. The
headline comparison gives TRL every second frame (T/2 images): then the visual
token count, the vision-tower input and the language-model prompt length match
longrl's exactly, up to the 2 delimiter tokens around each image. `--same-frames`
also runs TRL on all T frames (2x the visual tokens; what a user would get by
passing the video's frames) and reports it as a second ratio.

Timing: seconds from the end of one optimizer step to the end of the next (TRL: a
callback's on_step_end; longrl: the moment it logs a step's metrics), so a step
includes data loading, preprocessing, rollout, reward, update and logging; both
wall-clock and this process's CPU time (all threads) are taken. The first step of
each run is a warm-up and excluded; a run's figure is the median of its other
steps, and the table gives the median over `--repeats` runs of each trainer
(longrl and TRL alternate) and the median of the per-repeat ratios TRL / longrl.
On a machine shared with other jobs, wall-clock swings with their load; run with
`--threads 1` and read the CPU-second ratios there (one thread: no time is spent
waiting for a second, descheduled thread).
Replies stop at the end-of-turn token, as in training; the mean reply lengths of
both are printed, with the ratio per generated reply token beside the per-step one.

    python benchmarks/trl_grpo.py --frames 16 64 256 --repeats 3 --steps 3

Writes JSON (`--out`, default runs/benchmarks/trl_grpo.json) and a PNG beside it.
Needs TRL: `make install-bench`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

WIDTH, HEIGHT = 640, 360  # the source video; frames are resized to data.max_pixels
SOURCE_FPS = 4.0  # the video has 2 source frames per sampled frame


# --- token arithmetic -------------------------------------------------------------------


def visual_tokens(frames: int, height: int, width: int, cfg) -> dict[str, int]:
    """Visual tokens of `frames` frames (height x width) as one video and as images.

    `cfg` is a `longrl.models.preprocess.VisionPreprocessConfig`. A video of T frames
    has ceil(T / temporal_patch_size) temporal patches; each image is one temporal
    patch, so T images cost temporal_patch_size times the video's tokens, and
    T / temporal_patch_size images cost the same as the video.
    """
    from longrl.models.preprocess import image_grid_thw, num_vision_tokens, video_grid_thw

    video = num_vision_tokens(video_grid_thw(frames, height, width, cfg), cfg)
    per_image = num_vision_tokens(image_grid_thw(height, width, cfg), cfg)
    equal_images = -(-frames // cfg.temporal_patch_size)
    return {
        "video_tokens": video,
        "tokens_per_image": per_image,
        "equal_token_images": equal_images,
        "equal_token_image_tokens": equal_images * per_image,
        "same_frame_image_tokens": frames * per_image,
    }


# --- the reward both trainers use ---------------------------------------------------------


def text_score(text: str) -> float:
    """A cheap reward that differs between replies (so GRPO advantages are not all 0)."""
    return sum(ch in "aeiou" for ch in text) / max(1, len(text))


def longrl_reward(responses, **_columns) -> list[float]:
    """longrl's user-reward signature (worker.reward.reward_function=FILE:longrl_reward)."""
    return [text_score(text) for text in responses]


def trl_reward(completions, **_kwargs) -> list[float]:
    """TRL's reward signature; conversational completions are lists of messages."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [text_score(text) for text in texts]


# --- inputs -------------------------------------------------------------------------------


def build_inputs(work: Path, frames: int, hidden: int, layers: int) -> dict:
    """The model, the video, its record, and the frames longrl samples from it."""
    from embedding_cache import make_video, write_records
    from longrl.video.decode import read_frames
    from tiny_models import tiny_vl_model

    model = tiny_vl_model(work, hidden, layers)
    video = make_video(work / f"video_{frames}.mp4", 2 * frames, SOURCE_FPS, WIDTH, HEIGHT)
    records = write_records(work / f"records_{frames}.jsonl", video)
    decoded = read_frames(video, num_frames=frames, max_frames=frames)
    return {"model": model, "video": video, "records": records, "frames": decoded.frames}


def longrl_settings(inputs: dict, frames: int, args, run_dir: Path) -> dict:
    return {
        "worker.actor.model.model_path": inputs["model"],
        "data.train_files": inputs["records"],
        "data.rollout_batch_size": 1,
        "worker.actor.global_batch_size": 1,
        "worker.rollout.n": args.n,
        "worker.actor.micro_batch_size_per_device_for_update": args.n,
        "worker.actor.micro_batch_size_per_device_for_experience": args.n,
        "data.max_response_length": args.response_length,
        "data.num_frames": frames,
        "data.max_frames": frames,
        "data.max_prompt_length": 1 << 20,
        "worker.actor.optim.lr": args.lr,
        "algorithm.disable_kl": True,
        "worker.reward.functions": "{}",
        "worker.reward.reward_function": f"{Path(__file__).resolve()}:longrl_reward",
        "trainer.max_steps": args.steps,
        "trainer.output_dir": run_dir,
        "trainer.logger": "[jsonl]",
        "trainer.save_freq": -1,
    }


def longrl_prompt_tokens(inputs: dict, frames: int, args) -> int:
    """Prompt tokens (text + visual) of the video prompt longrl builds for the record."""
    from transformers import AutoConfig

    from longrl.config import load_config
    from longrl.data.dataset import iter_dataset
    from longrl.models.inputs import build_prompt_batch
    from longrl.models.load import load_processor
    from longrl.train.prompts import decode_clips

    settings = longrl_settings(inputs, frames, args, Path("unused"))
    data = load_config(None, [f"{k}={v}" for k, v in settings.items()]).data
    processor = load_processor(
        inputs["model"], min_pixels=data.min_pixels, max_pixels=data.max_pixels
    )
    model_config = AutoConfig.from_pretrained(inputs["model"], local_files_only=True)
    (sample,) = iter_dataset(str(inputs["records"]), None, on_error="raise")
    model_input = build_prompt_batch(
        [sample], [decode_clips(sample, data)], processor, model_config, thinking=data.thinking
    )
    return int(model_input.input_ids.shape[1])


def trl_prompt_tokens(inputs: dict, images: list) -> int:
    """Prompt tokens of TRL's image prompt, rendered by the processor TRL is given."""
    from longrl.data.dataset import iter_dataset

    processor, data = trl_processor(inputs["model"])
    (sample,) = iter_dataset(str(inputs["records"]), None, on_error="raise")
    ids = processor.apply_chat_template(
        [trl_messages(sample, data.thinking, images, payload=True)],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"][0]
    return len(ids)


def trl_processor(model: Path):
    """The processor TRL gets: longrl's, with the pixel bounds of longrl's data defaults
    (so an image is resized exactly like a video frame)."""
    from longrl.config import load_config
    from longrl.models.load import load_processor

    data = load_config(None, []).data
    processor = load_processor(model, min_pixels=data.min_pixels, max_pixels=data.max_pixels)
    return processor, data


def trl_messages(sample, thinking: bool, images: list, payload: bool) -> list[dict]:
    """longrl's chat messages for `sample` with its video replaced by one image part per
    image: with the image in it (`payload`), or TRL's empty placeholder, which the
    trainer fills from the row's `images` column."""
    from longrl.models.prompts import build_messages

    out = []
    for message in build_messages(sample, thinking):
        content = []
        for part in message["content"]:
            if part["type"] != "video":
                content.append(part)
            else:
                content.extend(
                    {"type": "image", "image": image} if payload else {"type": "image"}
                    for image in images
                )
        out.append({**message, "content": content})
    return out


# --- clocks -------------------------------------------------------------------------------


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds now; CPU time is this process's, all threads."""
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    now = clock()
    return now[0] - start[0], now[1] - start[1]


def step_times(start: tuple[float, float], ends: list[tuple[float, float]]) -> dict:
    """Wall and CPU seconds of each step from the stamps at the end of each step; the
    medians leave out the first step (the warm-up)."""
    marks = [start, *ends]
    wall = [b[0] - a[0] for a, b in itertools.pairwise(marks)]
    cpu = [b[1] - a[1] for a, b in itertools.pairwise(marks)]
    return {
        "step_s": wall,
        "step_cpu_s": cpu,
        "median_step_s": statistics.median(wall[1:]),
        "median_cpu_s": statistics.median(cpu[1:]),
    }


# --- longrl -------------------------------------------------------------------------------


def run_longrl(inputs: dict, frames: int, args, run_dir: Path) -> dict:
    """One `longrl rl` run of args.steps steps; wall seconds per step and its metrics."""
    import torch

    import longrl.train.rl as rl
    from longrl.config import load_config
    from longrl.train.metrics import read_metrics

    config = load_config(
        None, [f"{k}={v}" for k, v in longrl_settings(inputs, frames, args, run_dir).items()]
    )
    stamps: list[tuple[float, float]] = []
    opener = rl.open_run_metrics

    def timed_metrics(*a, **kw):  # stamps the end of each step (its metrics are logged)
        log = opener(*a, **kw)
        write = log.log

        def stamped(step, metrics):
            stamps.append(clock())
            write(step, metrics)

        log.log = stamped
        return log

    rl.open_run_metrics = timed_metrics
    try:
        start = clock()
        rows = read_metrics(rl.run_rl(config) / "metrics.jsonl")
    finally:
        rl.open_run_metrics = opener
    phases = {
        key: statistics.median(row[key] for row in rows[1:])
        for key in rows[0]
        if key.startswith("time/") and len(rows) > 1
    }
    return {
        **step_times(start, stamps),
        "response_length_mean": statistics.mean(row["response_length/mean"] for row in rows),
        "response_length_max": max(row["response_length/max"] for row in rows),
        "response_tokens_per_step": statistics.mean(
            row["response_length/mean"] * args.n for row in rows[1:]
        ),
        "phases_s": phases,
        "vision_encode_calls": statistics.mean(row["vision/encode_calls"] for row in rows),
        "torch_threads": torch.get_num_threads(),
    }


# --- TRL ----------------------------------------------------------------------------------


def run_trl(inputs: dict, images: list, args, run_dir: Path) -> dict:
    """One TRL GRPOTrainer run of args.steps optimizer steps on `images`."""
    import datasets
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from longrl.data.dataset import iter_dataset
    from longrl.models.load import load_model
    from longrl.train.policy import vision_tower

    processor, data = trl_processor(inputs["model"])
    model = load_model(inputs["model"], dtype=torch.float32)
    vision_tower(model).requires_grad_(False)  # as longrl's freeze_vision_tower default
    (sample,) = iter_dataset(str(inputs["records"]), None, on_error="raise")
    prompt = trl_messages(sample, data.thinking, images, payload=False)
    # One row; the trainer repeats it n times per step and cycles it over the steps.
    dataset = datasets.Dataset.from_dict({"prompt": [prompt], "images": [images]})

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[tuple[float, float]] = []
            self.logs: list[dict] = []
            self.start = clock()

        def on_train_begin(self, *_a, **_kw):
            self.start = clock()

        def on_step_end(self, *_a, **_kw):
            self.ends.append(clock())

        def on_log(self, _args, _state, _control, logs=None, **_kw):
            self.logs.append(dict(logs or {}))

    class TimedGRPOTrainer(GRPOTrainer):
        """Times (wall, CPU) `generate` and the whole rollout phase (`_prepare_inputs`:
        prompt rendering and image preprocessing, generation, rewards) of each step."""

        phase_s: dict[str, list[tuple[float, float]]]

        def _generate_single_turn(self, *a, **kw):
            start = clock()
            try:
                return super()._generate_single_turn(*a, **kw)
            finally:
                self.phase_s["generate"].append(_since(start))

        def _prepare_inputs(self, *a, **kw):
            start = clock()
            try:
                return super()._prepare_inputs(*a, **kw)
            finally:
                self.phase_s["prepare_inputs"].append(_since(start))

    config = GRPOConfig(
        output_dir=str(run_dir),
        max_steps=args.steps,
        per_device_train_batch_size=args.n,  # one group of n replies per optimizer step
        gradient_accumulation_steps=1,
        num_generations=args.n,
        max_completion_length=args.response_length,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.01,
        max_grad_norm=1.0,
        optim="adamw_torch",
        beta=0.0,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        use_vllm=False,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        shuffle_dataset=False,
        seed=0,
    )
    stamps = Clock()
    trainer = TimedGRPOTrainer(
        model=model,
        reward_funcs=trl_reward,
        args=config,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[stamps],
    )
    trainer.phase_s = {"generate": [], "prepare_inputs": []}
    trainer.train()
    step_logs = [log for log in stamps.logs if "completions/mean_length" in log]
    phases = {}
    for name, times in trainer.phase_s.items():
        phases[f"time/trl_{name}_s"] = statistics.median(wall for wall, _ in times[1:])
        phases[f"time/trl_{name}_cpu_s"] = statistics.median(cpu for _, cpu in times[1:])
    return {
        **step_times(stamps.start, stamps.ends),
        "response_length_mean": statistics.mean(
            log["completions/mean_length"] for log in step_logs
        ),
        "response_length_max": max(log["completions/max_length"] for log in step_logs),
        "response_tokens_per_step": statistics.mean(
            log["completions/mean_length"] * args.n for log in step_logs[1:]
        ),
        "phases_s": phases,
        "torch_threads": torch.get_num_threads(),
    }


# --- the benchmark ------------------------------------------------------------------------


def measure(work: Path, frames: int, args) -> dict:
    from PIL import Image

    from longrl.config import load_config
    from longrl.models.preprocess import VisionPreprocessConfig

    inputs = build_inputs(work, frames, args.hidden, args.layers)
    data = load_config(None, []).data
    cfg = VisionPreprocessConfig(min_pixels=data.min_pixels, max_pixels=data.max_pixels)
    tokens = visual_tokens(frames, HEIGHT, WIDTH, cfg)
    pictures = [Image.fromarray(frame) for frame in inputs["frames"]]
    variants = {"equal_tokens": pictures[:: cfg.temporal_patch_size]}
    if args.same_frames:
        variants["same_frames"] = pictures
    row: dict = {"frames": frames, **tokens, "longrl": [], "trl": {k: [] for k in variants}}
    row["prompt_tokens"] = {"longrl": longrl_prompt_tokens(inputs, frames, args)}
    for name, images in variants.items():
        row["prompt_tokens"][f"trl_{name}"] = trl_prompt_tokens(inputs, images)
    for repeat in range(args.repeats):
        row["longrl"].append(run_longrl(inputs, frames, args, work / f"longrl_{frames}_{repeat}"))
        for name, images in variants.items():
            run_dir = work / f"trl_{name}_{frames}_{repeat}"
            row["trl"][name].append(run_trl(inputs, images, args, run_dir))
    summarise(row)
    return row


def summarise(row: dict) -> None:
    """Medians over the repeats, and the TRL / longrl ratios: of wall and CPU seconds per
    step (median of the per-repeat ratios), and the same per generated reply token."""
    ours = row["longrl"]
    row["longrl_step_s"] = _median(ours, "median_step_s")
    row["longrl_cpu_s"] = _median(ours, "median_cpu_s")
    row["longrl_reply_tokens_per_step"] = _median(ours, "response_tokens_per_step")
    for name, theirs in row["trl"].items():
        row[f"trl_{name}_step_s"] = _median(theirs, "median_step_s")
        row[f"trl_{name}_cpu_s"] = _median(theirs, "median_cpu_s")
        row[f"trl_{name}_reply_tokens_per_step"] = _median(theirs, "response_tokens_per_step")
        for key, clock_key in (("ratio", "median_step_s"), ("cpu_ratio", "median_cpu_s")):
            row[f"{key}_{name}"] = statistics.median(
                t[clock_key] / o[clock_key] for t, o in zip(theirs, ours, strict=True)
            )
        # Per generated reply token: the step ratio x (longrl's tokens / TRL's tokens).
        tokens = row["longrl_reply_tokens_per_step"] / row[f"trl_{name}_reply_tokens_per_step"]
        row[f"token_ratio_{name}"] = row[f"ratio_{name}"] * tokens
        row[f"cpu_token_ratio_{name}"] = row[f"cpu_ratio_{name}"] * tokens


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def table_row(row: dict) -> str:
    trl_runs = row["trl"]["equal_tokens"]
    cells = [
        row["frames"],
        f"{row['video_tokens']:,}",
        f"{row['prompt_tokens']['longrl']:,} / {row['prompt_tokens']['trl_equal_tokens']:,}",
        f"{_mean_len(row['longrl']):.1f} / {_mean_len(trl_runs):.1f}",
        f"{row['longrl_step_s']:.2f}",
        f"{row['trl_equal_tokens_step_s']:.2f}",
        f"{row['ratio_equal_tokens']:.2f}x",
        f"{row['longrl_cpu_s']:.2f}",
        f"{row['trl_equal_tokens_cpu_s']:.2f}",
        f"{row['cpu_ratio_equal_tokens']:.2f}x",
        f"{row['token_ratio_equal_tokens']:.2f}x / {row['cpu_token_ratio_equal_tokens']:.2f}x",
    ]
    if "same_frames" in row["trl"]:
        cells += [
            f"{row['prompt_tokens']['trl_same_frames']:,}",
            f"{row['trl_same_frames_step_s']:.2f}",
            f"{row['ratio_same_frames']:.2f}x",
            f"{row['cpu_ratio_same_frames']:.2f}x",
        ]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _mean_len(runs: list[dict]) -> float:
    return statistics.mean(run["response_length_mean"] for run in runs)


def header(same_frames: bool) -> str:
    columns = [
        "frames",
        "video tokens",
        "prompt tokens longrl / TRL",
        "mean reply longrl / TRL",
        "longrl s/step",
        "TRL s/step",
        "TRL/longrl",
        "longrl CPU s/step",
        "TRL CPU s/step",
        "TRL/longrl CPU",
        "TRL/longrl per reply token (wall / CPU)",
    ]
    if same_frames:
        columns += [
            "TRL all-frames prompt tokens",
            "TRL all-frames s/step",
            "TRL all-frames/longrl",
            "TRL all-frames/longrl CPU s",
        ]
    return "| " + " | ".join(columns) + " |\n|" + " --- |" * len(columns)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    frames = [row["frames"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(frames, [r["longrl_step_s"] for r in rows], marker="o", label="longrl (video)")
    left.plot(
        frames,
        [r["trl_equal_tokens_step_s"] for r in rows],
        marker="o",
        label="TRL (T/2 images, equal tokens)",
    )
    right.plot(frames, [r["ratio_equal_tokens"] for r in rows], marker="o", label="equal tokens")
    right.plot(
        frames,
        [r["cpu_ratio_equal_tokens"] for r in rows],
        marker="s",
        linestyle=":",
        label="equal tokens, CPU seconds",
    )
    if "trl_same_frames_step_s" in rows[0]:
        left.plot(
            frames,
            [r["trl_same_frames_step_s"] for r in rows],
            marker="o",
            linestyle="--",
            label="TRL (T images, 2x tokens)",
        )
        right.plot(
            frames,
            [r["ratio_same_frames"] for r in rows],
            marker="o",
            linestyle="--",
            label="all frames as images",
        )
    left.set_title("seconds per GRPO step (median)")
    right.set_title("TRL / longrl seconds per step")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(frames, [str(f) for f in frames])
        axis.set_xlabel("frames")
        axis.grid(alpha=0.3)
        axis.legend()
    left.set_yscale("log")
    right.axhline(1.0, color="gray", linewidth=0.8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each trainer (median)")
    parser.add_argument(
        "--steps", type=int, default=3, help="optimizer steps per run (1st excluded)"
    )
    parser.add_argument("--n", type=int, default=8, help="replies per prompt (group size)")
    parser.add_argument("--response-length", type=int, default=64, help="reply budget in tokens")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--hidden", type=int, default=128, help="language-model width")
    parser.add_argument("--layers", type=int, default=2, help="language-model layers")
    parser.add_argument(
        "--same-frames", action="store_true", help="also run TRL on all T frames (2x tokens)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    parser.add_argument("--out", default="runs/benchmarks/trl_grpo.json")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step is a warm-up)")
    logging.basicConfig(level=logging.WARNING)
    import torch
    import trl

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = []
    started = time.perf_counter()
    print(header(args.same_frames), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for frames in args.frames:
            rows.append(measure(Path(tmp), frames, args))
            print(table_row(rows[-1]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "versions": {"torch": torch.__version__, "trl": trl.__version__},
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
