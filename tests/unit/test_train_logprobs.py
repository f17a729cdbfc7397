import pytest
import torch

from longrl.rollout.engine import PromptBatch, TorchRolloutEngine
from longrl.rollout.sampling import SamplingParams
from longrl.train.logprobs import response_log_probs

from ..tiny_lm import EOS, PAD, random_left_padded, tiny_qwen2


def _model(seed=0):
    # Untied head and the default context length: a second shape beside the engine tests'.
    return tiny_qwen2(seed, tie_word_embeddings=False, max_position_embeddings=32768)


def _batch(lengths=(9, 5)):
    ids, mask = random_left_padded(lengths, seed=4)
    return PromptBatch(attention_mask=mask, input_ids=ids)


@pytest.fixture(scope="module")
def rollout():
    model = _model().eval()
    prompts = _batch()
    out = TorchRolloutEngine(model, pad_token_id=PAD, eos_token_ids=(EOS,)).generate(
        prompts, SamplingParams(n=3, max_new_tokens=8, seed=5, temperature=1.0)
    )
    return prompts, out


def test_shared_equals_naive_and_rollout_log_probs(rollout):
    prompts, out = rollout
    model = _model().eval()
    with torch.no_grad():
        shared = response_log_probs(
            model, prompts, out.response_ids, out.response_mask, n=3, with_entropy=True
        )
        naive = response_log_probs(
            model,
            prompts,
            out.response_ids,
            out.response_mask,
            n=3,
            share_prefix=False,
            with_entropy=True,
        )
    torch.testing.assert_close(shared.log_probs, naive.log_probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared.entropy, naive.entropy, atol=1e-5, rtol=0)
    # The rollout engine recorded the same log-probs (same weights).
    torch.testing.assert_close(shared.log_probs, out.log_probs, atol=1e-5, rtol=0)


def test_shared_prefix_gradients_equal_naive(rollout):
    prompts, out = rollout
    weights = torch.linspace(-1.0, 1.0, out.response_ids.numel()).view_as(out.log_probs)
    grads = {}
    for share in (True, False):
        model = _model()
        model.train()
        result = response_log_probs(
            model, prompts, out.response_ids, out.response_mask, n=3, share_prefix=share
        )
        (result.log_probs * weights).sum().backward()
        grads[share] = {name: p.grad.clone() for name, p in model.named_parameters()}
    for name, grad in grads[True].items():
        torch.testing.assert_close(grad, grads[False][name], rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for g in grads[True].values())


def test_embeddings_input_equals_ids_input(rollout):
    prompts, out = rollout
    model = _model().eval()
    embeds = model.get_input_embeddings()(prompts.input_ids)
    by_embeds = PromptBatch(attention_mask=prompts.attention_mask, inputs_embeds=embeds)
    with torch.no_grad():
        a = response_log_probs(model, prompts, out.response_ids, out.response_mask, n=3)
        b = response_log_probs(model, by_embeds, out.response_ids, out.response_mask, n=3)
        c = response_log_probs(
            model, by_embeds, out.response_ids, out.response_mask, n=3, share_prefix=False
        )
    torch.testing.assert_close(a.log_probs, b.log_probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.log_probs, c.log_probs, atol=1e-5, rtol=0)


def test_count_mismatch_is_an_error(rollout):
    prompts, out = rollout
    with pytest.raises(ValueError, match="n=2"):
        response_log_probs(_model(), prompts, out.response_ids, out.response_mask, n=2)
