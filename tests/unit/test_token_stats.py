"""Fused log-prob + entropy over the vocabulary = the log_softmax formulation."""

import pytest
import torch

import longrl.train.token_stats as token_stats
from longrl.train.token_stats import token_log_probs_and_entropy


def _reference(logits, ids, temperature):
    scale = temperature if temperature > 0 else 1.0
    log_softmax = torch.log_softmax(logits.float() / scale, dim=-1)
    log_probs = log_softmax.gather(-1, ids[..., None]).squeeze(-1)
    entropy = -(log_softmax.exp() * log_softmax).sum(-1)
    return log_probs, entropy


def _inputs(shape=(3, 5), vocab=37, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(*shape, vocab, generator=gen) * 3).to(dtype)
    ids = torch.randint(0, vocab, shape, generator=gen)
    weights = torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen)
    return logits, ids, weights


def _grads(fn, logits, ids, weights, temperature, with_entropy=True):
    leaf = logits.clone().requires_grad_()
    log_probs, entropy = fn(leaf, ids, temperature)
    loss = (log_probs * weights[0]).sum()
    if with_entropy:
        loss = loss + (entropy * weights[1]).sum()
    loss.backward()
    return log_probs.detach(), entropy.detach(), leaf.grad


def _fused(logits, ids, temperature):
    return token_log_probs_and_entropy(logits, ids, temperature=temperature, with_entropy=True)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_values_and_gradients_equal_log_softmax(temperature):
    logits, ids, weights = _inputs()
    ours = _grads(_fused, logits, ids, weights, temperature)
    reference = _grads(_reference, logits, ids, weights, temperature)
    torch.testing.assert_close(ours[0], reference[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[1], reference[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[2], reference[2], atol=1e-6, rtol=1e-4)


def test_gradient_of_log_probs_alone_and_entropy_alone():
    logits, ids, weights = _inputs(seed=1)
    for with_entropy in (False, True):
        only_lp = (weights[0], torch.zeros_like(weights[1]))
        chosen = only_lp if not with_entropy else (torch.zeros_like(weights[0]), weights[1])
        ours = _grads(_fused, logits, ids, chosen, 0.9)
        reference = _grads(_reference, logits, ids, chosen, 0.9)
        torch.testing.assert_close(ours[2], reference[2], atol=1e-6, rtol=1e-4)
    # Without entropy: None, and the log-prob gradient alone.
    leaf = logits.clone().requires_grad_()
    log_probs, entropy = token_log_probs_and_entropy(leaf, ids, temperature=0.9)
    assert entropy is None
    (log_probs * weights[0]).sum().backward()
    reference = _grads(_reference, logits, ids, weights, 0.9, with_entropy=False)
    torch.testing.assert_close(leaf.grad, reference[2], atol=1e-6, rtol=1e-4)


def test_chunks_give_the_same_result(monkeypatch):
    logits, ids, weights = _inputs(shape=(4, 9), vocab=50, seed=2)
    whole = _grads(_fused, logits, ids, weights, 0.8)
    monkeypatch.setattr(token_stats, "CHUNK_ELEMENTS", 120)  # 2 rows per chunk
    chunked = _grads(_fused, logits, ids, weights, 0.8)
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_bfloat16_logits_computed_in_float32():
    logits, ids, weights = _inputs(seed=3, dtype=torch.bfloat16)
    ours = _grads(_fused, logits, ids, weights, 1.0)
    reference = _grads(_reference, logits, ids, weights, 1.0)
    assert ours[0].dtype == torch.float32 and ours[2].dtype == torch.bfloat16
    torch.testing.assert_close(ours[0], reference[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[1], reference[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[2].float(), reference[2].float(), atol=1e-2, rtol=1e-2)


def test_gradcheck_float64():
    logits, ids, _ = _inputs(shape=(2, 3), vocab=7, seed=4, dtype=torch.float64)
    logits.requires_grad_()

    def fn(z):
        return token_log_probs_and_entropy(z, ids, temperature=0.6, with_entropy=True)

    assert torch.autograd.gradcheck(fn, (logits,))
