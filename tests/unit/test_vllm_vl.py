"""vLLM backend vs the built-in engine on a tiny Qwen2.5-VL: cached video embeddings through
vLLM's multimodal path with training's 3-D positions, before and after an in-place weight
sync; inputs vLLM would see differently are refused. Needs `longrl[vllm]`."""

import importlib.util

import numpy as np
import pytest
import torch

from longrl.data.sample import Sample
from longrl.models.inputs import VideoClip, build_prompt_batch, compute_video_embeds
from longrl.rollout.engine import PromptBatch, TorchRolloutEngine
from longrl.rollout.sampling import SamplingParams
from longrl.train.logprobs import response_log_probs
from longrl.train.prompts import prompt_batch

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None, reason="vllm not installed (make install-vllm)"
    ),
]

LOG_PROB_TOL = 1e-4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from longrl.models.load import load_model, load_processor
    from longrl.models.tiny import build_tiny_checkpoint
    from longrl.rollout.vllm_engine import VllmRolloutEngine

    path = build_tiny_checkpoint(tmp_path_factory.mktemp("vl") / "model", kind="qwen2_5_vl")
    model = load_model(path).eval()
    processor = load_processor(path)
    tokenizer = processor.tokenizer
    eos = (tokenizer.eos_token_id, tokenizer.pad_token_id)
    engine = VllmRolloutEngine(
        model,
        path,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_ids=eos,
        max_model_len=512,
        work_dir=tmp_path_factory.mktemp("vllm"),
    )
    builtin = TorchRolloutEngine(model, pad_token_id=tokenizer.pad_token_id, eos_token_ids=eos)
    yield model, processor, engine, builtin
    engine.close()


def _clip(frames, fps, seed):
    rng = np.random.default_rng(seed)
    return VideoClip(rng.integers(0, 255, (frames, 56, 56, 3), dtype=np.uint8), fps=fps)


def _model_input(model, processor):
    """Three rows: fractional seconds per temporal patch (1.5 and 3 fps: 4/3 s and 2/3 s),
    different lengths (left padding differs), and a text-only row."""
    samples = [
        Sample("a", "<video>Which colour came first?", "A", videos=("a.mp4",)),
        Sample("b", "<video>How many scenes were red? Think it over.", "B", videos=("b.mp4",)),
        Sample("c", "No video here: what is two plus two?", "4"),
    ]
    clips = [[_clip(16, 1.5, 0)], [_clip(6, 3.0, 1)], []]
    return build_prompt_batch(samples, clips, processor, model.config, thinking=True)


def _batch(model, processor):
    model_input = _model_input(model, processor)
    with torch.no_grad():
        embeds = compute_video_embeds(model, model_input)
        return prompt_batch(model, model_input, embeds)


def _same_rollout(ours, reference):
    assert torch.equal(ours.response_ids, reference.response_ids)
    assert torch.equal(ours.response_mask, reference.response_mask)
    assert float((ours.log_probs - reference.log_probs).abs().max()) < LOG_PROB_TOL


def test_greedy_from_cached_video_embeddings_before_and_after_sync(setup):
    model, processor, engine, builtin = setup
    params = SamplingParams(n=2, temperature=0, max_new_tokens=10)
    first = engine.generate(_batch(model, processor), params)
    _same_rollout(first, builtin.generate(_batch(model, processor), params))
    assert first.response_mask.sum() > 0

    optimizer = torch.optim.AdamW(model.model.language_model.parameters(), lr=2e-2)
    batch = _batch(model, processor)
    logits = model(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
    ).logits
    logits.logsumexp(-1).mean().backward()  # any loss that moves every LM weight
    optimizer.step()
    optimizer.zero_grad()
    engine.sync_weights(model)

    after = engine.generate(_batch(model, processor), params)
    _same_rollout(after, builtin.generate(_batch(model, processor), params))
    # The update moved the policy (the tiny model's greedy tokens may stay the same).
    assert float((first.log_probs - after.log_probs).abs().max()) > 0.05


def test_sampled_log_probs_equal_the_training_forward(setup):
    model, processor, engine, _ = setup
    batch = _batch(model, processor)
    out = engine.generate(batch, SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=5))
    with torch.no_grad():
        forced = response_log_probs(
            model, batch, out.response_ids, out.response_mask, n=3, temperature=1.0
        ).log_probs
    assert float(((out.log_probs - forced) * out.response_mask).abs().max()) < LOG_PROB_TOL


def test_refuses_inputs_vllm_would_see_differently(setup):
    from longrl.rollout.vllm_inputs import VllmUnsupportedError

    model, processor, engine, _ = setup
    batch = _batch(model, processor)
    params = SamplingParams(temperature=0, max_new_tokens=4)
    # prompt_embeds alone: vLLM would use 1-D positions for a 3-D M-RoPE model.
    with pytest.raises(VllmUnsupportedError, match="1-D positions"):
        engine.generate(
            PromptBatch(
                attention_mask=batch.attention_mask,
                inputs_embeds=batch.inputs_embeds,
                position_ids=batch.position_ids,
            ),
            params,
        )
    # Positions by another rule (here: the text after the video one step earlier).
    shifted = batch.position_ids.clone()
    shifted[:, 0, -3:] -= 1
    with pytest.raises(VllmUnsupportedError, match="different 3-D positions"):
        engine.generate(
            PromptBatch(
                attention_mask=batch.attention_mask,
                input_ids=batch.input_ids,
                inputs_embeds=batch.inputs_embeds,
                position_ids=shifted,
            ),
            params,
        )
    # Text embeddings that are not the model's embeddings of the prompt's tokens.
    altered = batch.inputs_embeds.clone()
    altered[:, -1] += 0.5
    with pytest.raises(VllmUnsupportedError, match="token embeddings"):
        engine.generate(
            PromptBatch(
                attention_mask=batch.attention_mask,
                input_ids=batch.input_ids,
                inputs_embeds=altered,
                position_ids=batch.position_ids,
            ),
            params,
        )
