"""SequenceParallelLM in one process (sp=1): same numbers as the model, clear input errors.

With one rank the collectives vanish but the wrapper's own mask, padding,
logits selection and cache bookkeeping all run, so their bugs show up here fast.
"""

from __future__ import annotations

import pytest
import torch

from longrl.parallel.errors import ParallelConfigError
from longrl.parallel.sp_model import SequenceParallelLM
from longrl.rollout.engine import PromptBatch, TorchRolloutEngine, text_position_ids
from longrl.rollout.sampling import SamplingParams
from longrl.train.logprobs import response_log_probs

from .sp_fixtures import EOS, PAD, left_padded, random_rows, tiny_qwen2


@pytest.fixture(scope="module")
def batch():
    ids, mask = left_padded(random_rows([9, 5]))
    return ids, mask, text_position_ids(mask)


def test_logits_and_logits_to_keep_match_the_model(batch):
    ids, mask, positions = batch
    model = tiny_qwen2().eval()
    wrapped = SequenceParallelLM(tiny_qwen2().eval(), None)
    with torch.no_grad():
        for keep in (0, 1, 3):
            expected = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
            ).logits
            got = wrapped(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
            ).logits
            assert got.shape == expected.shape
            real = mask[:, -got.shape[1] :].bool()
            torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)


def test_rollout_and_prefix_shared_log_probs_match_the_model(batch):
    ids, mask, _ = batch
    prompts = PromptBatch(attention_mask=mask, input_ids=ids)
    params = SamplingParams(n=2, max_new_tokens=5, seed=3)
    model = tiny_qwen2().eval()
    wrapped = SequenceParallelLM(tiny_qwen2().eval(), None)
    expected = TorchRolloutEngine(model, pad_token_id=PAD, eos_token_ids=(EOS,)).generate(
        prompts, params
    )
    got = TorchRolloutEngine(wrapped, pad_token_id=PAD, eos_token_ids=(EOS,)).generate(
        prompts, params
    )
    assert torch.equal(got.response_ids, expected.response_ids)
    with torch.no_grad():
        shared = response_log_probs(wrapped, prompts, got.response_ids, got.response_mask, n=2)
    torch.testing.assert_close(shared.log_probs, expected.log_probs, atol=1e-5, rtol=0)


def test_bad_inputs_are_clear_errors(batch):
    ids, mask, positions = batch
    wrapped = SequenceParallelLM(tiny_qwen2(), None)
    with pytest.raises(ParallelConfigError, match="explicit position_ids"):
        wrapped(input_ids=ids, attention_mask=mask)
    with pytest.raises(ParallelConfigError, match="pixel_values_videos"):
        wrapped(input_ids=ids, position_ids=positions, pixel_values_videos=torch.zeros(1))
    with pytest.raises(ParallelConfigError, match=r"expected \[batch, 9\]"):
        wrapped(input_ids=ids, attention_mask=mask[:, 1:], position_ids=positions)
    plain_cache = tiny_qwen2()(input_ids=ids, use_cache=True).past_key_values
    with pytest.raises(ParallelConfigError, match="not filled by SequenceParallelLM"):
        wrapped(
            input_ids=ids[:, :1],
            position_ids=positions[:, :1],
            past_key_values=plain_cache,
        )


def test_plain_calls_of_an_enabled_model_are_unchanged(batch):
    """enable_ulysses keeps non-SP forwards exact (SDPA with the model's own mask)."""
    ids, mask, positions = batch
    model = tiny_qwen2().eval()
    SequenceParallelLM(enabled := tiny_qwen2().eval(), None)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        got = enabled(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-6, rtol=0)
