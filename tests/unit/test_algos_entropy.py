"""Entropy from logits: exact values, stability, chunking."""

import math

import pytest
import torch

from longrl.algos.entropy import entropy_from_logits


def test_uniform_distribution_has_entropy_log_v():
    logits = torch.full((2, 5, 7), 3.0)
    assert torch.allclose(entropy_from_logits(logits), torch.full((2, 5), math.log(7)))


def test_known_two_class_distribution():
    # p = [0.75, 0.25]: H = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.5623351
    logits = torch.log(torch.tensor([[0.75, 0.25]]))
    assert entropy_from_logits(logits).item() == pytest.approx(0.5623351, abs=1e-6)


def test_minus_inf_and_huge_logits_stay_finite():
    logits = torch.tensor(
        [
            [0.0, -math.inf, -math.inf, -math.inf],  # one-hot: 0
            [0.0, 0.0, -math.inf, -math.inf],  # two equal: ln 2
            [1000.0, 0.0, 0.0, 0.0],  # near one-hot at a huge scale: ~0
        ]
    )
    out = entropy_from_logits(logits)
    assert torch.isfinite(out).all()
    assert out.tolist() == pytest.approx([0.0, math.log(2), 0.0], abs=1e-6)


def test_chunking_matches_the_unchunked_formula():
    torch.manual_seed(0)
    logits = torch.randn(3, 11, 13) * 4
    log_p = torch.log_softmax(logits, dim=-1)
    reference = -(log_p.exp() * log_p).sum(-1)
    for chunk in (1, 4, 33, 1000):
        assert torch.allclose(entropy_from_logits(logits, chunk_size=chunk), reference, atol=1e-5)


def test_bfloat16_input_is_computed_in_float32():
    out = entropy_from_logits(torch.zeros(4, 16, dtype=torch.bfloat16))
    assert out.dtype == torch.float32
    assert out.tolist() == pytest.approx([math.log(16)] * 4, abs=1e-6)
