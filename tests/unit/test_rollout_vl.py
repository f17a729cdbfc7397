"""The engine on a video-language model: embeddings + 3-D positions from the input builder."""

import numpy as np
import pytest
import torch

from longrl.data.sample import Sample
from longrl.models.inputs import VideoClip, build_prompt_batch, compute_video_embeds
from longrl.models.processor import build_processor
from longrl.models.tiny import TINY_VISION_PREPROCESS, build_tiny_model, train_tiny_tokenizer
from longrl.rollout.engine import TorchRolloutEngine
from longrl.rollout.sampling import SamplingParams
from longrl.train.logprobs import response_log_probs
from longrl.train.prompts import prompt_batch


@pytest.fixture(scope="module")
def kit():
    tokenizer = train_tiny_tokenizer()
    model = build_tiny_model("qwen2_5_vl", tokenizer, seed=0)
    processor = build_processor(tokenizer, TINY_VISION_PREPROCESS)
    return model, processor


def _video(frames, seed):
    rng = np.random.default_rng(seed)
    return VideoClip(rng.integers(0, 255, (frames, 56, 56, 3), dtype=np.uint8), fps=2.0)


def _prompts(processor, model):
    samples = [
        Sample("a", "<video>Which colour came first?", "A", videos=("a.mp4",)),
        Sample("b", "<video>How many scenes were red? Think it over.", "B", videos=("b.mp4",)),
    ]
    videos = [[_video(8, 0)], [_video(4, 1)]]  # different lengths: left padding differs
    return build_prompt_batch(samples, videos, processor, model.config, thinking=True)


def test_greedy_from_embeddings_equals_transformers_generate_with_reference_positions(kit):
    model, processor = kit
    mi = _prompts(processor, model)
    tokenizer = processor.tokenizer
    engine = TorchRolloutEngine(
        model, pad_token_id=tokenizer.pad_token_id, eos_token_ids=(tokenizer.eos_token_id,)
    )
    with torch.no_grad():
        embeds = compute_video_embeds(model, mi)
        ours = engine.generate(
            prompt_batch(model, mi, embeds), SamplingParams(temperature=0, max_new_tokens=10)
        )
        reference = model.generate(
            input_ids=mi.input_ids,
            attention_mask=mi.attention_mask,
            pixel_values_videos=mi.pixel_values_videos,
            video_grid_thw=mi.video_grid_thw,
            second_per_grid_ts=mi.second_per_grid_ts,
            position_ids=mi.position_ids,
            max_new_tokens=10,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )[:, mi.input_ids.shape[1] :]
    width = ours.response_ids.shape[1]
    assert width > 0
    assert torch.equal(ours.response_ids, reference[:, :width])


def test_rollout_and_training_log_probs_agree_with_the_input_builder(kit):
    """Rollout (KV cache), prefix-shared training forward and the builder's full
    prompt+response sequence (append_responses) give the same log-probs."""
    from longrl.models.inputs import append_responses, forward_logits

    model, processor = kit
    mi = _prompts(processor, model)
    tokenizer = processor.tokenizer
    engine = TorchRolloutEngine(
        model, pad_token_id=tokenizer.pad_token_id, eos_token_ids=(tokenizer.eos_token_id,)
    )
    with torch.no_grad():
        embeds = compute_video_embeds(model, mi)
        batch = prompt_batch(model, mi, embeds)
        out = engine.generate(batch, SamplingParams(n=3, max_new_tokens=8, seed=2))
        shared = response_log_probs(model, batch, out.response_ids, out.response_mask, n=3)
        full = append_responses(mi, out.response_ids, out.prompt_index, out.response_mask)
        logits = forward_logits(model, full, video_embeds=embeds)
    width = out.response_ids.shape[1]
    log_softmax = torch.log_softmax(logits[:, mi.prompt_width - 1 : -1].float(), -1)
    builder = log_softmax.gather(-1, out.response_ids[..., None]).squeeze(-1) * out.response_mask
    torch.testing.assert_close(shared.log_probs, builder[:, :width], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.log_probs, builder[:, :width], atol=1e-5, rtol=0)


def test_shared_prefix_attention_equals_the_repeated_cache(kit):
    """Video prompts (embeddings, 3-D positions, left padding): the decode path that
    attends to each prompt once per group samples the same tokens, with the same
    log-probs, as the one that repeats the prompt's cache n ways."""
    model, processor = kit
    mi = _prompts(processor, model)
    tokenizer = processor.tokenizer
    outputs = []
    with torch.no_grad():
        batch = prompt_batch(model, mi, compute_video_embeds(model, mi))
        for flag in (True, False):
            engine = TorchRolloutEngine(
                model,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_ids=(tokenizer.eos_token_id,),
                prefix_attention=flag,
            )
            outputs.append(engine.generate(batch, SamplingParams(n=4, max_new_tokens=12, seed=5)))
    fast, repeated = outputs
    assert model.config.text_config._attn_implementation == "sdpa"
    assert torch.equal(fast.response_ids, repeated.response_ids)
    assert torch.equal(fast.response_mask, repeated.response_mask)
    torch.testing.assert_close(fast.log_probs, repeated.log_probs, atol=1e-5, rtol=0)
