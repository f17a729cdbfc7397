"""Advantage estimators against hand-computed numbers (arithmetic written out)."""

import math

import pytest
import torch

from longrl.algos.advantages import (
    ADVANTAGE_ESTIMATORS,
    compute_advantages,
    discounted_returns,
    drgrpo_advantages,
    grpo_advantages,
    masked_whiten,
    outcome_token_rewards,
    reinforce_plus_plus_advantages,
    reinforce_plus_plus_baseline_advantages,
    rewards_from_scores,
    rloo_advantages,
)

EPS = 1e-6


def per_sample(advantages: torch.Tensor) -> list[float]:
    """First-token advantage of each row (every test row has token 0 valid)."""
    return advantages[:, 0].tolist()


def test_grpo_one_group_uses_unbiased_std():
    # [1, 0, 0, 1]: mean 0.5; unbiased std = sqrt(4 * 0.5^2 / 3) = sqrt(1/3) = 0.5773503
    std = math.sqrt(1 / 3)
    a = 0.5 / (std + EPS)  # 0.8660239
    adv = grpo_advantages([1.0, 0.0, 0.0, 1.0], torch.ones(4, 3), [7, 7, 7, 7])
    assert per_sample(adv) == pytest.approx([a, -a, -a, a], abs=1e-6)
    assert a == pytest.approx(0.866024, abs=1e-6)
    assert adv.shape == (4, 3) and adv.dtype == torch.float32
    assert torch.equal(adv[:, 0], adv[:, 2])  # same value on every token


def test_grpo_two_samples_distinguishes_std_convention():
    # [1, 0]: unbiased std = sqrt(0.5) -> A = 0.5 / 0.7071 = 0.7071 (biased std would give 1.0)
    adv = grpo_advantages(torch.tensor([[1.0, 0.0]]), torch.ones(2, 1))
    assert per_sample(adv) == pytest.approx([0.5 / (math.sqrt(0.5) + EPS), -0.70710578], abs=1e-6)


def test_grpo_interleaved_string_groups_and_grid_layout_agree():
    # group a = [1, 0] -> ±0.7071; group b = [2, 4]: mean 3, std sqrt(2) -> ∓1/sqrt(2)
    ids = ["a", "b", "a", "b"]
    adv = grpo_advantages([1.0, 2.0, 0.0, 4.0], torch.ones(4, 2), ids)
    a = 0.5 / (math.sqrt(0.5) + EPS)
    b = 1.0 / (math.sqrt(2.0) + EPS)
    assert per_sample(adv) == pytest.approx([a, -b, -a, b], abs=1e-6)
    grid = grpo_advantages(torch.tensor([[1.0, 0.0], [2.0, 4.0]]), torch.ones(4, 2))
    assert per_sample(grid) == pytest.approx([a, -a, -b, b], abs=1e-6)


def test_grpo_three_values():
    # [3, 1, 2]: mean 2, unbiased std = sqrt((1 + 1 + 0) / 2) = 1 -> [1, -1, 0] / (1 + eps)
    adv = grpo_advantages([3.0, 1.0, 2.0], torch.ones(3, 1), [0, 0, 0])
    assert per_sample(adv) == pytest.approx([1 / (1 + EPS), -1 / (1 + EPS), 0.0], abs=1e-7)


def test_masked_tokens_are_exactly_zero():
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    adv = grpo_advantages([1.0, 0.0], mask, [0, 0])
    a = 0.5 / (math.sqrt(0.5) + EPS)
    expected = torch.tensor([[a, a, 0, 0], [-a, 0, 0, 0]], dtype=torch.float32)
    assert torch.allclose(adv, expected, atol=1e-6)
    assert torch.all(adv[mask == 0] == 0)


@pytest.mark.parametrize("estimator", [grpo_advantages, drgrpo_advantages, rloo_advantages])
def test_single_sample_and_all_equal_groups_give_zero_not_nan(estimator):
    # group 0: one sample; group 1: all equal 0.3; group 2: all equal 1.0
    rewards = [5.0, 0.3, 0.3, 0.3, 1.0, 1.0]
    adv = estimator(rewards, torch.ones(6, 2), [0, 1, 1, 1, 2, 2])
    assert torch.isfinite(adv).all()
    assert adv.abs().max() < 1e-9


def test_invalid_samples_are_left_out_of_group_statistics():
    # valid = [1, 0, 0] (the 5.0 is unscored): mean 1/3,
    # std = sqrt(((2/3)^2 + 2 * (1/3)^2) / 2) = sqrt(1/3)
    rewards, valid = torch.tensor([1.0, 0.0, 5.0, 0.0]), torch.tensor([1, 1, 0, 1]).bool()
    adv = grpo_advantages(rewards, torch.ones(4, 1), [0, 0, 0, 0], valid=valid)
    std = math.sqrt(1 / 3)
    assert per_sample(adv) == pytest.approx(
        [(2 / 3) / (std + EPS), (-1 / 3) / (std + EPS), 0.0, (-1 / 3) / (std + EPS)], abs=1e-6
    )
    # a group left with one scored sample has no baseline: 0
    adv = grpo_advantages([1.0, 0.0], torch.ones(2, 1), [0, 0], valid=torch.tensor([True, False]))
    assert per_sample(adv) == [0.0, 0.0]


def test_rewards_from_scores_turns_none_into_invalid():
    values, valid = rewards_from_scores([1.0, None, 0.5])
    assert values.tolist() == [1.0, 0.0, 0.5]
    assert valid.tolist() == [True, False, True]


def test_nan_reward_is_rejected_with_advice():
    with pytest.raises(ValueError, match=r"NaN/inf at samples \[1\].*valid=False"):
        grpo_advantages([1.0, float("nan")], torch.ones(2, 1), [0, 0])


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="response_mask must be"):
        grpo_advantages([1.0, 0.0], torch.ones(3, 2), [0, 0])
    with pytest.raises(ValueError, match="need group_ids"):
        grpo_advantages([1.0, 0.0], torch.ones(2, 2))
    with pytest.raises(ValueError, match="group_ids has 3 entries"):
        grpo_advantages([1.0, 0.0], torch.ones(2, 2), [0, 0, 1])


def test_drgrpo_is_mean_centred_without_std():
    adv = drgrpo_advantages([1.0, 0.0, 0.0, 1.0], torch.ones(4, 1), [0] * 4)
    assert per_sample(adv) == pytest.approx([0.5, -0.5, -0.5, 0.5])
    adv = drgrpo_advantages([3.0, 1.0, 2.0], torch.ones(3, 1), [0] * 3)
    assert per_sample(adv) == pytest.approx([1.0, -1.0, 0.0])


def test_rloo_leave_one_out_baseline():
    # [1, 0, 0, 1]: 1 - (0+0+1)/3 = 2/3 ; 0 - (1+0+1)/3 = -2/3
    adv = rloo_advantages([1.0, 0.0, 0.0, 1.0], torch.ones(4, 1), [0] * 4)
    assert per_sample(adv) == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3], abs=1e-7)
    # [3, 1, 2]: 3 - 1.5 = 1.5 ; 1 - 2.5 = -1.5 ; 2 - 2 = 0
    adv = rloo_advantages([3.0, 1.0, 2.0], torch.ones(3, 1), [0] * 3)
    assert per_sample(adv) == pytest.approx([1.5, -1.5, 0.0], abs=1e-7)


def test_outcome_reward_sits_on_last_response_token():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    placed = outcome_token_rewards(torch.tensor([2.0, 3.0, 9.0]), mask)
    assert placed.tolist() == [[0, 2, 0], [0, 0, 3], [0, 0, 0]]


def test_discounted_returns_reset_on_masked_tokens():
    rewards = torch.tensor([[1.0, 0.0, 2.0, 0.0, 4.0]])
    mask = torch.tensor([[1, 1, 1, 0, 1]])
    # t4: 4 ; t3 masked: 0 (resets) ; t2: 2 ; t1: 0 + 0.5*2 = 1 ; t0: 1 + 0.5*1 = 1.5
    assert discounted_returns(rewards, mask, 0.5).tolist() == [[1.5, 1.0, 2.0, 0.0, 4.0]]


def test_masked_whiten_uses_unbiased_variance_over_valid_entries():
    values = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 0]])
    # mean 2, unbiased var = (1 + 1) / 1 = 2
    out = masked_whiten(values, mask)
    s = math.sqrt(2 + 1e-8)
    assert out.tolist()[0] == pytest.approx([-1 / s, 1 / s, 0.0])
    assert masked_whiten(values, torch.tensor([[1, 0, 0]])).tolist() == [[0.0, 0.0, 0.0]]


def test_reinforce_plus_plus_no_kl_gamma_one():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # token rewards: [[0, 1, 0], [0, 0, 0]] -> returns [[1, 1, -], [0, 0, 0]]
    # valid returns 1,1,0,0,0: mean 0.4, unbiased var = (2*0.36 + 3*0.16) / 4 = 0.3
    adv = reinforce_plus_plus_advantages([1.0, 0.0], mask, gamma=1.0)
    s = math.sqrt(0.3 + 1e-8)
    expected = [[0.6 / s, 0.6 / s, 0.0], [-0.4 / s, -0.4 / s, -0.4 / s]]
    assert torch.allclose(adv, torch.tensor(expected), atol=1e-6)


def test_reinforce_plus_plus_with_gamma_and_kl_in_reward():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    token_kl = torch.tensor([[0.2, 0.4, 9.0], [0.0, 0.2, 0.4]])  # 9.0 is on a masked token
    # token rewards (kl_coef 0.5): row0 [-0.1, 1 - 0.2, 0] ; row1 [0, -0.1, -0.2]
    # returns (gamma 0.5): row0 t1 0.8, t0 -0.1 + 0.4 = 0.3
    #                      row1 t2 -0.2, t1 -0.1 - 0.1 = -0.2, t0 0 - 0.1 = -0.1
    returns = [0.3, 0.8, -0.1, -0.2, -0.2]
    mean = sum(returns) / 5  # 0.12
    var = sum((x - mean) ** 2 for x in returns) / 4  # 0.748 / 4 = 0.187
    s = math.sqrt(var + 1e-8)
    adv = reinforce_plus_plus_advantages(
        [1.0, 0.0], mask, gamma=0.5, token_kl=token_kl, kl_coef=0.5
    )
    expected = [
        [(0.3 - mean) / s, (0.8 - mean) / s, 0.0],
        [(-0.1 - mean) / s, (-0.2 - mean) / s, (-0.2 - mean) / s],
    ]
    assert torch.allclose(adv, torch.tensor(expected), atol=1e-6)
    assert adv[0, 1].item() == pytest.approx(0.68 / math.sqrt(0.187), abs=1e-5)


def test_reinforce_plus_plus_baseline():
    # per-sample r - group mean = ±0.5, broadcast to 2 tokens each (8 values, mean 0)
    # unbiased var = 8 * 0.25 / 7 = 2/7 -> A = ±0.5 / sqrt(2/7) = ±0.9354143
    adv = reinforce_plus_plus_baseline_advantages(
        torch.tensor([[1.0, 0.0, 0.0, 1.0]]), torch.ones(4, 2)
    )
    a = 0.5 / math.sqrt(2 / 7 + 1e-8)
    assert per_sample(adv) == pytest.approx([a, -a, -a, a], abs=1e-6)
    assert a == pytest.approx(0.935414, abs=1e-6)


def test_registry_uses_verl_easyr1_names_and_checks_options():
    for name in ("grpo", "drgrpo", "rloo", "reinforce_plus_plus", "reinforce_plus_plus_baseline"):
        assert name in ADVANTAGE_ESTIMATORS
    adv = compute_advantages("rloo", [1.0, 0.0], torch.ones(2, 1), [0, 0])
    assert per_sample(adv) == [1.0, -1.0]
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'"):
        compute_advantages("ppo", [1.0], torch.ones(1, 1), [0])
    with pytest.raises(ValueError, match=r"takes options \['eps', 'valid'\], not \['gamma'\]"):
        compute_advantages("grpo", [1.0, 0.0], torch.ones(2, 1), [0, 0], gamma=0.9)
    rpp = compute_advantages("reinforce_plus_plus", [1.0, 0.0], torch.ones(2, 1), gamma=0.9)
    assert rpp.shape == (2, 1)
