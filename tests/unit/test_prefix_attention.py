"""Shared-prefix decode attention: same attention, tokens and log-probs as the repeated cache."""

import pytest
import torch

from longrl.rollout.engine import PromptBatch, TorchRolloutEngine
from longrl.rollout.prefix_attention import (
    ATTENTION_NAME,
    SharedPrefix,
    attend_with_shared_prefix,
    prefix_shared_attention,
    supports_prefix_attention,
)
from longrl.rollout.sampling import SamplingParams

from ..tiny_lm import EOS, PAD, VOCAB, random_left_padded, tiny_qwen2


def _model(**overrides):
    return tiny_qwen2(**overrides).eval()


@pytest.fixture(scope="module")
def model():
    return _model()


def _prompts(lengths=(23, 9, 16)):
    ids, mask = random_left_padded(lengths, seed=1)
    return PromptBatch(attention_mask=mask, input_ids=ids)


class _Layer(torch.nn.Module):
    layer_idx = 0
    training = False


@pytest.mark.parametrize("q_len", [1, 3])
@pytest.mark.parametrize("subset", [False, True])
def test_attention_equals_sdpa_over_prompt_and_own_keys(q_len, subset):
    gen = torch.Generator().manual_seed(0)
    groups, n, heads, kv_heads, prompt_len, own_len, dim = 3, 4, 8, 2, 37, 5, 16
    keys = torch.randn(groups, kv_heads, prompt_len, dim, generator=gen)
    values = torch.randn(groups, kv_heads, prompt_len, dim, generator=gen)
    mask = torch.ones(groups, prompt_len, dtype=torch.bool)
    mask[1, :11] = False  # left padding of prompt 1
    rows = torch.tensor([0, 2, 3, 5, 9, 10, 11]) if subset else torch.arange(groups * n)
    count = rows.numel()
    query = torch.randn(count, heads, q_len, dim, generator=gen)
    own_k = torch.randn(count, kv_heads, own_len, dim, generator=gen)
    own_v = torch.randn(count, kv_heads, own_len, dim, generator=gen)
    prefix = SharedPrefix(keys=[keys], values=[values], mask=mask, n=n)
    if subset:
        prefix.select_rows(rows)
    with torch.no_grad():
        out, _ = prefix_shared_attention(
            _Layer(), query, own_k, own_v, None, scaling=0.3, longrl_shared_prefix=prefix
        )
    # Reference: each row's prompt (its group's) + own keys, one SDPA call with the mask.
    group = rows // n
    full_k = torch.cat([keys[group], own_k], dim=2).repeat_interleave(heads // kv_heads, dim=1)
    full_v = torch.cat([values[group], own_v], dim=2).repeat_interleave(heads // kv_heads, dim=1)
    causal = torch.ones(q_len, own_len, dtype=torch.bool).tril(own_len - q_len)
    visible = torch.cat(
        [mask[group][:, None, None, :].expand(-1, 1, q_len, -1), causal.expand(count, 1, -1, -1)],
        dim=-1,
    )
    reference = torch.nn.functional.scaled_dot_product_attention(
        query, full_k, full_v, attn_mask=visible, scale=0.3
    ).transpose(1, 2)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


def test_long_prompts_are_processed_in_blocks(monkeypatch):
    import longrl.rollout.prefix_attention as module

    gen = torch.Generator().manual_seed(2)
    keys = torch.randn(2, 1, 1000, 8, generator=gen)
    values = torch.randn(2, 1, 1000, 8, generator=gen)
    mask = torch.ones(2, 1000, dtype=torch.bool)
    mask[0, :300] = False
    query = torch.randn(4, 2, 1, 8, generator=gen)
    results = []
    for elements in (1 << 24, 1):  # one block; 256-key blocks (the first ones fully masked)
        monkeypatch.setattr(module, "_BLOCK_ELEMENTS", elements)
        prefix = SharedPrefix(keys=[keys], values=[values], mask=mask, n=2)
        with torch.no_grad():
            results.append(prefix.attend(0, query, 0.35))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-6, rtol=1e-5)


def _both(model, prompts, params):
    out = {}
    for flag in (True, False):
        engine = TorchRolloutEngine(
            model, pad_token_id=PAD, eos_token_ids=(EOS,), prefix_attention=flag
        )
        out[flag] = engine.generate(prompts, params)
    return out[True], out[False]


def test_greedy_tokens_identical_and_log_probs_close(model):
    fast, repeated = _both(model, _prompts(), SamplingParams(n=4, temperature=0, max_new_tokens=16))
    assert torch.equal(fast.response_ids, repeated.response_ids)
    assert torch.equal(fast.response_mask, repeated.response_mask)
    torch.testing.assert_close(fast.log_probs, repeated.log_probs, atol=1e-5, rtol=0)


def test_sampled_rows_with_stops_identical_and_log_probs_close(model):
    prompts = _prompts()
    params = SamplingParams(n=6, temperature=1.0, max_new_tokens=14, seed=11)
    first, _ = _both(model, prompts, params)
    # A stop token some rows (not all) emit mid-response: finished rows leave the batch.
    counts = torch.bincount(first.response_ids[:, 3], minlength=VOCAB)
    stop = int(counts.argmax())
    stopping = SamplingParams(
        n=6, temperature=1.0, max_new_tokens=14, seed=11, stop_token_ids=(stop,)
    )
    fast, repeated = _both(model, prompts, stopping)
    assert fast.finished.any() and not fast.finished.all()
    assert torch.equal(fast.response_ids, repeated.response_ids)
    assert torch.equal(fast.finished, repeated.finished)
    torch.testing.assert_close(fast.log_probs, repeated.log_probs, atol=1e-5, rtol=0)


def test_greedy_groups_equal_transformers_generate(model):
    prompts = _prompts((20, 20))
    ours = TorchRolloutEngine(model, pad_token_id=PAD, eos_token_ids=(-1,)).generate(
        prompts, SamplingParams(n=3, temperature=0, max_new_tokens=12)
    )
    with torch.no_grad():
        reference = model.generate(
            input_ids=prompts.input_ids,
            attention_mask=prompts.attention_mask,
            num_return_sequences=3,
            max_new_tokens=12,
            min_new_tokens=12,
            do_sample=True,  # with top_k=1: greedy (generate refuses n > 1 samples greedily)
            top_k=1,
            pad_token_id=PAD,
            eos_token_id=None,
        )[:, prompts.input_ids.shape[1] :]
        # transformers' own log-probs of those tokens (a teacher-forced forward).
        full = torch.cat([prompts.input_ids.repeat_interleave(3, 0), reference], dim=1)
        logits = model(input_ids=full).logits[:, prompts.input_ids.shape[1] - 1 : -1]
        expected = torch.log_softmax(logits, -1).gather(-1, reference[..., None]).squeeze(-1)
    assert torch.equal(ours.response_ids, reference)
    torch.testing.assert_close(ours.log_probs, expected, atol=1e-5, rtol=0)


def test_attention_implementation_restored(model):
    assert model.config._attn_implementation == "sdpa"
    with attend_with_shared_prefix(model):
        assert model.config._attn_implementation == ATTENTION_NAME
        # A call without the state is plain SDPA.
        ids = torch.tensor([[3, 4, 5, 6]])
        with torch.no_grad():
            inside = model(input_ids=ids).logits
    with torch.no_grad():
        outside = model(input_ids=ids).logits
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(inside, outside, atol=0, rtol=0)
    with pytest.raises(ValueError), attend_with_shared_prefix(model):
        raise ValueError("boom")
    assert model.config._attn_implementation == "sdpa"


def test_other_models_fall_back_to_the_repeated_cache(model):
    assert supports_prefix_attention(model)
    assert not supports_prefix_attention(torch.nn.Sequential(model))
    sliding = _model(use_sliding_window=True, sliding_window=8, max_window_layers=0)
    assert not supports_prefix_attention(sliding)
    # The engine still decodes them, through the repeated cache.
    out = TorchRolloutEngine(sliding, pad_token_id=PAD, eos_token_ids=(EOS,)).generate(
        _prompts(), SamplingParams(n=2, temperature=0, max_new_tokens=4)
    )
    assert out.response_ids.shape[0] == 6
