"""`evaluate`: generate answers for a dataset's questions with a model and score them.

The prompt batch, video decoding and encoding (once per video), and rollout are
the trainer's own (`train.prompts`, `train.experience.roll_out`), so a model is
evaluated on exactly the input it was trained on. With n > 1 responses per
question the engine prefills each prompt once and samples n continuations.
Bad samples are skipped with a logged reason and counted in the report.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from longrl.config.data import DataConfig
from longrl.data.sample import Sample
from longrl.eval.errors import EvalError
from longrl.eval.report import PREDICTIONS_FILE, EvalReport, write_prediction
from longrl.eval.scoring import QuestionResult, UnscorableQuestion, gold_letter, score_question
from longrl.eval.source import (
    ModelSource,
    base_data_config,
    load_eval_policy,
    resolve_model_source,
)
from longrl.eval.summary import summarize, summarize_by_type

logger = logging.getLogger("longrl.eval")

MAX_SKIP_EXAMPLES = 5
# data.* keys an eval may change; the rest describe training data.
DATA_OVERRIDE_KEYS = frozenset(
    {
        "fps",
        "num_frames",
        "min_frames",
        "max_frames",
        "min_pixels",
        "max_pixels",
        "video_total_pixels",
        "max_prompt_length",
        "filter_overlong_prompts",
        "on_bad_sample",
        "prompt_key",
        "answer_key",
        "video_key",
    }
)


def evaluate(
    model_source: str | Path,
    data_file: str | Path,
    *,
    out_dir: str | Path | None = None,
    video_root: str | Path | None = None,
    thinking: bool | None = None,
    k: int = 1,
    num_samples: int | None = None,
    temperature: float | None = None,
    top_p: float = 1.0,
    top_k: int = -1,
    batch_size: int = 4,
    max_new_tokens: int | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    data_overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    device: str = "auto",
) -> EvalReport:
    """Evaluate a model directory, training checkpoint or run directory on `data_file`.

    k: pass@k is reported from `num_samples` (default k) responses per question.
    temperature: default 0 (greedy) for a single response, 1.0 when sampling several.
    thinking / max_new_tokens / data_overrides (frame sampling, pixels; keys in
    DATA_OVERRIDE_KEYS): default to the training run's settings for a checkpoint,
    to DataConfig's defaults for a plain model directory.
    device: "auto" (cuda:0 when CUDA is available, else cpu), "cpu" or "cuda"
    (`longrl.devices.choose_device`); generation runs there, scoring on the CPU.
    Writes report.json and predictions.jsonl into `out_dir` when given.
    """
    from longrl.devices import DeviceError, select_device
    from longrl.rollout.sampling import SamplingParams

    n = k if num_samples is None else num_samples
    temperature = (0.0 if n == 1 else 1.0) if temperature is None else temperature
    _check_settings(k, n, batch_size, max_samples)
    source = resolve_model_source(model_source)
    data_file = Path(data_file)
    if not data_file.is_file():
        raise EvalError(f"{data_file}: data file not found")
    data = eval_data_config(source, data_overrides, thinking)
    new_tokens = data.max_response_length if max_new_tokens is None else max_new_tokens
    try:  # checked here, before the model is loaded
        sampling = SamplingParams(
            n=n, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=new_tokens
        )
    except ValueError as err:
        raise EvalError(f"bad sampling setting: {err}") from None
    try:
        run_device = select_device(device)
    except DeviceError as err:
        raise EvalError(str(err)) from None
    if n > 1 and temperature == 0:
        logger.warning("%d responses per question at temperature 0 are all the same answer", n)

    started = time.perf_counter()
    samples, skipped, examples = _load_questions(data_file, video_root, data, max_samples)
    if not samples:
        raise EvalError(_nothing_to_evaluate(data_file, skipped, examples))
    policy = load_eval_policy(source, data, device=run_device)
    settings = {
        "model": source.describe(),
        "data_file": str(data_file),
        "video_root": None if video_root is None else str(video_root),
        "thinking": data.thinking,
        "k": k,
        "n": n,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_new_tokens": new_tokens,
        "batch_size": batch_size,
        "max_samples": max_samples,
        "seed": seed,
        "device": str(run_device),
        "data": data.model_dump(include=DATA_OVERRIDE_KEYS | {"thinking"}),
    }
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    results = _generate_and_score(
        policy, samples, data, sampling, batch_size, seed, skipped, examples, out, progress
    )
    if not results:
        raise EvalError(_nothing_to_evaluate(data_file, skipped, examples))
    report = EvalReport(
        metrics=summarize(results, k),
        per_type=summarize_by_type(results, k),
        skipped=dict(skipped),
        skipped_examples=examples,
        settings=settings,
        seconds=time.perf_counter() - started,
        results=results,
        out_dir=out,
    )
    report.write_report()
    return report


def _check_settings(k: int, n: int, batch_size: int, max_samples: int | None) -> None:
    if k < 1:
        raise EvalError(f"k must be >= 1, got {k}")
    if n < k:
        raise EvalError(f"pass@{k} needs at least {k} responses per question, got {n}")
    if batch_size < 1:
        raise EvalError(f"batch_size must be >= 1, got {batch_size}")
    if max_samples is not None and max_samples < 1:
        raise EvalError(f"max_samples must be >= 1, got {max_samples}")


def eval_data_config(
    source: ModelSource, overrides: Mapping[str, Any] | None, thinking: bool | None
) -> DataConfig:
    """The data settings of this eval: the source's (training run's or defaults), then
    `overrides` (keys in DATA_OVERRIDE_KEYS), then `thinking` when given."""
    from pydantic import ValidationError

    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - DATA_OVERRIDE_KEYS)
    if unknown:
        raise EvalError(f"unknown data setting(s) {unknown}; allowed: {sorted(DATA_OVERRIDE_KEYS)}")
    if overrides.get("fps") is not None and "num_frames" not in overrides:
        overrides["num_frames"] = None  # fps asked for: a trained num_frames must not win
    if thinking is not None:
        overrides["thinking"] = thinking
    merged = {**base_data_config(source).model_dump(), **overrides}
    try:
        return DataConfig.model_validate(merged)
    except ValidationError as err:
        raise EvalError(f"bad data setting: {err}") from None


def _load_questions(
    data_file: Path, video_root, data: DataConfig, max_samples: int | None
) -> tuple[list[Sample], Counter, list[str]]:
    """Records of the file (first `max_samples`) that the multiple-choice scorer applies to."""
    from longrl.data.dataset import load_dataset
    from longrl.data.records import RecordError

    try:
        samples, load_report = load_dataset(
            data_file,
            video_root,
            on_error=data.on_bad_sample,
            prompt_key=data.prompt_key,
            answer_key=data.answer_key,
            video_key=data.video_key,
        )
    except RecordError as err:
        raise EvalError(str(err)) from None
    skipped: Counter = Counter(load_report.skipped)
    examples = list(load_report.examples[:MAX_SKIP_EXAMPLES])
    if max_samples is not None:
        samples = samples[:max_samples]
    kept = []
    for sample in samples:
        try:
            gold_letter(sample)
        except UnscorableQuestion as err:
            if data.on_bad_sample == "raise":
                raise EvalError(str(err)) from None
            logger.warning("skipping %s", err)
            skipped[err.reason] += 1
            _add_example(examples, str(err))
            continue
        kept.append(sample)
    return kept, skipped, examples


def _add_example(examples: list[str], message: str) -> None:
    if len(examples) < MAX_SKIP_EXAMPLES:
        examples.append(message)


def _nothing_to_evaluate(data_file: Path, skipped: Counter, examples: list[str]) -> str:
    if not skipped:
        return f"{data_file}: no records to evaluate"
    detail = "; ".join(examples)
    return f"{data_file}: no question could be evaluated (skipped {dict(skipped)}): {detail}"


class _DecodableStream:
    """The samples in order with their decoded videos; undecodable ones are skipped by
    `draw_decodable` (logged, counted in `skipped`) and remembered here for the report."""

    def __init__(self, samples: Sequence[Sample], data: DataConfig, skipped: Counter) -> None:
        self._samples = iter(samples)
        self._limit = len(samples) + 1  # never give up early: every sample is tried once
        self._data, self._skipped = data, skipped
        self._pending: list[Sample] = []
        self.consumed = 0
        self._failed: list[Sample] = []

    def _next(self) -> Sample:
        sample = next(self._samples)  # StopIteration leaves draw_decodable: the data is done
        self.consumed += 1
        self._pending.append(sample)
        return sample

    def take(self, count: int):
        from longrl.train.prompts import draw_decodable

        drawn = []
        while len(drawn) < count:
            self._pending = []
            try:
                (item,) = draw_decodable(
                    self._next, 1, self._data, self._skipped, max_attempts=self._limit
                )
            except StopIteration:
                self._failed.extend(self._pending)
                break
            self._failed.extend(self._pending[:-1])
            drawn.append(item)
        return drawn

    def pop_failed(self) -> list[Sample]:
        """Samples skipped for their video since the last call."""
        failed, self._failed = self._failed, []
        return failed


def _generate_and_score(
    policy, samples, data, sampling, batch_size, seed, skipped, examples, out, progress
) -> list[QuestionResult]:
    from tqdm import tqdm

    from longrl.rollout.engine import TorchRolloutEngine
    from longrl.train.experience import decode_responses, roll_out
    from longrl.train.prompts import encode_prompts

    engine = TorchRolloutEngine(
        policy.model, pad_token_id=policy.pad_token_id, eos_token_ids=policy.eos_token_ids
    )
    stream = _DecodableStream(samples, data, skipped)
    results: list[QuestionResult] = []
    handle = open(out / PREDICTIONS_FILE, "w") if out is not None else None  # noqa: SIM115
    bar = tqdm(total=len(samples), desc="eval", unit="q", file=sys.stderr, disable=not progress)
    try:
        for batch_index in itertools.count():
            before = stream.consumed
            drawn = stream.take(batch_size)
            for sample in stream.pop_failed():
                videos = ", ".join(sample.videos)
                _add_example(
                    examples, f"{_where(sample)}: video_error ({videos}; reason in the log)"
                )
            if not drawn:
                bar.update(stream.consumed - before)
                break
            encoded = encode_prompts(policy, drawn, data, skipped)
            kept = set() if encoded is None else {id(s) for s in encoded.samples}
            for sample, _ in drawn:
                if id(sample) not in kept:
                    _add_example(
                        examples,
                        f"{_where(sample)}: prompt_too_long (> {data.max_prompt_length} tokens)",
                    )
            if encoded is not None:
                params = dataclasses.replace(
                    sampling,
                    stop_token_ids=policy.eos_token_ids,
                    seed=seed * 1_000_003 + batch_index,  # reproducible, fresh per batch
                )
                for group in roll_out(policy, engine, encoded, params):
                    result = score_question(
                        group.sample,
                        decode_responses(policy, group.responses),
                        [len(r) for r in group.responses],
                        group.finished,
                        thinking=data.thinking,
                    )
                    results.append(result)
                    if handle is not None:
                        write_prediction(handle, result)
            bar.update(stream.consumed - before)
            bar.set_postfix(acc=f"{_running_accuracy(results):.3f}", refresh=False)
    finally:
        bar.close()
        if handle is not None:
            handle.close()
    return results


def _running_accuracy(results: Sequence[QuestionResult]) -> float:
    total = sum(r.n for r in results)
    return sum(r.num_correct for r in results) / total if total else 0.0


def _where(sample: Sample) -> str:
    return sample.source or sample.problem_id
