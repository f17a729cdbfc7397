"""PPO-clip loss, KL estimators and loss aggregation against hand-computed numbers."""

import math

import pytest
import torch

from longrl.algos.aggregate import LOSS_AGG_MODES, aggregate_loss, masked_mean
from longrl.algos.kl import KL_ESTIMATORS, kl_divergence
from longrl.algos.policy_loss import ppo_clip_loss

# One token per case; old log-prob 0, so ratio r = exp(log_prob).
#            A     r      why
CASES = [
    (+1.0, 1.10),  # inside the clip range: loss -A r = -1.1, d/dlogp = -A r = -1.1
    (+1.0, 1.50),  # above 1 + 0.28: loss -1.28, no gradient (clip_frac_high)
    (+1.0, 1.25),  # between 1.2 and 1.28: clipped only WITHOUT clip-higher
    (-1.0, 0.50),  # below 1 - 0.2: loss max(0.5, 0.8) = 0.8, no gradient (clip_frac_low)
    (-1.0, 2.00),  # A<0, r in (1.28, 3): loss max(2, 1.28) = 2, dual min(2, 3) = 2, grad 2
    (-1.0, 4.00),  # A<0, r > c = 3: max(4, 1.28) = 4, dual min(4, 3) = 3, no grad (dual_clip)
    (-2.0, 0.90),  # inside: loss -A r = 1.8, grad 1.8
]


def case_tensors():
    adv = torch.tensor([[a for a, _ in CASES]])
    log_probs = torch.tensor([[math.log(r) for _, r in CASES]], requires_grad=True)
    old = torch.zeros_like(log_probs, requires_grad=True)
    return log_probs, old, adv, torch.ones_like(adv, dtype=torch.bool)


def test_clip_higher_and_dual_clip_values_and_gradients():
    log_probs, old, adv, mask = case_tensors()
    out = ppo_clip_loss(
        log_probs, old, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0
    )
    expected_loss = [-1.1, -1.28, -1.25, 0.8, 2.0, 3.0, 1.8]
    assert out.per_token_loss[0].tolist() == pytest.approx(expected_loss, abs=1e-6)
    out.per_token_loss.sum().backward()
    assert log_probs.grad[0].tolist() == pytest.approx([-1.1, 0, -1.25, 0, 2.0, 0, 1.8], abs=1e-6)
    assert old.grad is None  # no gradient through the old policy
    assert out.clip_frac_high.item() == pytest.approx(1 / 7)
    assert out.clip_frac_low.item() == pytest.approx(1 / 7)
    assert out.dual_clip_frac.item() == pytest.approx(1 / 7)
    approx_kl = -sum(math.log(r) for _, r in CASES) / 7
    assert out.approx_kl.item() == pytest.approx(approx_kl, abs=1e-6)
    assert set(out.metrics()) == {
        "actor/pg_clipfrac_low",
        "actor/pg_clipfrac_high",
        "actor/pg_clipfrac_dual",
        "actor/ppo_kl",
    }


def test_symmetric_clip_clips_the_clip_higher_token():
    log_probs, old, adv, mask = case_tensors()
    out = ppo_clip_loss(log_probs, old, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.2)
    # token 2 (A=+1, r=1.25) is now clipped at 1.2; token 1 at 1.2 too; token 4: max(2, 1.2)=2
    assert out.per_token_loss[0, :3].tolist() == pytest.approx([-1.1, -1.2, -1.2], abs=1e-6)
    assert out.clip_frac_high.item() == pytest.approx(2 / 7)
    out.per_token_loss.sum().backward()
    assert log_probs.grad[0, 2].item() == 0.0


def test_dual_clip_off_leaves_large_negative_ratio_unbounded():
    log_probs, old, adv, mask = case_tensors()
    out = ppo_clip_loss(log_probs, old, adv, mask, clip_ratio_high=0.28, clip_ratio_c=None)
    assert out.per_token_loss[0, 5].item() == pytest.approx(4.0)
    assert out.dual_clip_frac.item() == 0.0
    with pytest.raises(ValueError, match="must be > 1"):
        ppo_clip_loss(log_probs, old, adv, mask, clip_ratio_c=1.0)


def test_masked_tokens_and_extreme_log_ratios():
    # token 1 is masked with a huge ratio; token 0 has log-ratio 50 (clamped to 20 before exp)
    log_probs = torch.tensor([[50.0, 30.0]], requires_grad=True)
    old = torch.zeros(1, 2)
    adv = torch.tensor([[-1.0, -1.0]])
    mask = torch.tensor([[True, False]])
    out = ppo_clip_loss(log_probs, old, adv, mask, clip_ratio_c=None)
    assert out.per_token_loss[0, 0].item() == pytest.approx(math.exp(20.0), rel=1e-6)
    assert out.per_token_loss[0, 1].item() == 0.0
    assert out.approx_kl.item() == pytest.approx(-20.0)  # only the valid token, clamped
    out.per_token_loss.sum().backward()
    assert log_probs.grad.tolist() == [[0.0, 0.0]]  # clamped and masked: no gradient


def test_kl_estimators_zero_at_equal_log_probs():
    lp = torch.log(torch.tensor([[0.1, 0.5, 0.9]]))
    for name in KL_ESTIMATORS:
        assert kl_divergence(name, lp, lp.clone()).abs().max().item() < 1e-7, name


def test_kl_estimators_at_a_known_pair():
    # p = 0.5 (policy), q = 0.25 (reference): log p - log q = ln 2 = 0.693147
    lp = torch.tensor([math.log(0.5), math.log(0.25)])
    ref = torch.tensor([math.log(0.25), math.log(0.5)])
    ln2 = math.log(2)
    expected = {
        "kl": [ln2, -ln2],
        "abs": [ln2, ln2],
        "mse": [0.5 * ln2**2, 0.5 * ln2**2],  # 0.240227
        # k3 = q/p - ln(q/p) - 1: 0.5 + ln2 - 1 = 0.193147 ; 2 - ln2 - 1 = 0.306853
        "low_var_kl": [0.5 + ln2 - 1, 2 - ln2 - 1],
    }
    for name, values in expected.items():
        assert kl_divergence(name, lp, ref).tolist() == pytest.approx(values, abs=1e-6), name
    for alias, name in (("k1", "kl"), ("k2", "mse"), ("k3", "low_var_kl")):
        assert KL_ESTIMATORS[alias] is KL_ESTIMATORS[name]
    assert expected["low_var_kl"][0] == pytest.approx(0.193147, abs=1e-6)


def test_k3_gradient_reaches_policy_only_and_is_clamped():
    lp = torch.tensor([math.log(0.5)], requires_grad=True)
    ref = torch.tensor([math.log(0.25)], requires_grad=True)
    kl_divergence("k3", lp, ref).sum().backward()
    # d/dlogp [e^(logq-logp) - (logq-logp) - 1] = 1 - q/p = 1 - 0.5
    assert lp.grad.item() == pytest.approx(0.5)
    assert ref.grad is None
    # log q - log p = 30 -> clamped to 20 -> e^20 - 21 -> value clamped to 10
    far = kl_divergence("k3", torch.tensor([-30.0]), torch.tensor([0.0]))
    assert far.item() == 10.0
    with pytest.raises(ValueError, match="unknown KL estimator 'full'"):
        kl_divergence("full", lp, ref)


LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, float("nan")]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])  # the third sequence is empty


def test_aggregation_modes_hand_computed():
    # valid: row0 {1, 2}, row1 {4}; row2 has no token and is left out of seq means
    assert aggregate_loss(LOSS, MASK, "token-mean").item() == pytest.approx(7 / 3)  # (1+2+4)/3
    assert aggregate_loss(LOSS, MASK, "seq-mean-token-mean").item() == pytest.approx(2.75)
    # (1.5 + 4) / 2 = 2.75 ; token sums (3 + 4) / 2 = 3.5 ; with /T=3: (1 + 4/3) / 2 = 7/6
    assert aggregate_loss(LOSS, MASK, "seq-mean-token-sum").item() == pytest.approx(3.5)
    assert aggregate_loss(LOSS, MASK, "seq-mean-token-sum-norm").item() == pytest.approx(7 / 6)
    norm10 = aggregate_loss(LOSS, MASK, "seq-mean-token-sum-norm", max_len=10)
    assert norm10.item() == pytest.approx(0.35)  # (0.3 + 0.4) / 2
    assert aggregate_loss(LOSS, MASK, "token").item() == pytest.approx(7 / 3)
    assert aggregate_loss(LOSS, MASK, "seq").item() == pytest.approx(2.75)
    assert set(LOSS_AGG_MODES) >= {
        "token-mean",
        "seq-mean-token-mean",
        "seq-mean-token-sum",
        "seq-mean-token-sum-norm",
    }
    with pytest.raises(ValueError, match="unknown loss_agg_mode 'mean'"):
        aggregate_loss(LOSS, MASK, "mean")


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_global_normalizer_makes_micro_batches_sum_to_the_full_batch(mode):
    full = aggregate_loss(LOSS[:2], MASK[:2], mode)
    count = 3 if mode == "token-mean" else 2  # global tokens / global sequences
    parts = [
        aggregate_loss(LOSS[i : i + 1], MASK[i : i + 1], mode, normalizer=count) for i in (0, 1)
    ]
    assert sum(p.item() for p in parts) == pytest.approx(full.item())


def test_all_masked_gives_zero_with_a_working_backward():
    values = torch.ones(2, 3, requires_grad=True)
    for mode in LOSS_AGG_MODES:
        loss = aggregate_loss(values, torch.zeros(2, 3), mode)
        assert loss.item() == 0.0
        loss.backward()
    assert values.grad.abs().sum().item() == 0.0
    assert masked_mean(torch.ones(2), torch.zeros(2)).item() == 0.0


def test_full_loss_gradient_flows_to_log_probs_only():
    log_probs = torch.log(torch.tensor([[0.5, 0.4], [0.3, 0.2]])).requires_grad_()
    old = log_probs.detach().clone().requires_grad_()
    ref = (log_probs.detach() - 0.1).requires_grad_()
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0]])
    out = ppo_clip_loss(log_probs, old, adv, mask)
    kl = kl_divergence("low_var_kl", log_probs, ref)
    loss = aggregate_loss(out.per_token_loss, mask, "token-mean") + 0.1 * aggregate_loss(
        kl, mask, "token-mean"
    )
    loss.backward()
    # at r = 1 the pg gradient is -A / 3 per valid token; k3 adds 0.1 * (1 - e^{-0.1}) / 3
    k3_grad = 0.1 * (1 - math.exp(-0.1)) / 3
    expected = [[-1 / 3 + k3_grad, -1 / 3 + k3_grad], [1 / 3 + k3_grad, 0.0]]
    assert log_probs.grad.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]
    assert old.grad is None and ref.grad is None and adv.grad is None
