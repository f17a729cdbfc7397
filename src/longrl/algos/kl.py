"""Per-token KL estimators between the policy and the reference model.

Notation: log p = `log_probs` (policy, carries gradient), log q = `ref_log_probs`
(reference, always detached here), both [N, T] log-probs of the SAMPLED tokens.
With samples drawn from p, each estimator's mean estimates KL(p || q)
(Schulman, "Approximating KL divergence", 2020):

- k1 ("kl", "k1"):          log p - log q                      unbiased, high variance, can be < 0
- abs ("abs"):              |log p - log q|
- k2 ("mse", "k2"):         0.5 * (log p - log q)^2            biased, low variance, >= 0
- k3 ("low_var_kl", "k3"):  q/p - log(q/p) - 1
                            = exp(log q - log p) - (log q - log p) - 1   unbiased, >= 0

k3 clamps log q - log p to [-20, 20] before exp and the result to [-10, 10]
(as verl/EasyR1 do): a token the reference finds e^20 times likelier would
otherwise overflow or dominate the batch. The clamps also zero the gradient
of those extreme tokens.

Use in the loss: `kl_coef * aggregate_loss(kl_divergence(name, lp, ref), mask, mode)`.
Use in the reward (REINFORCE++): pass `kl_divergence(name, old_lp, ref)` as
`token_kl` with `kl_coef` to the advantage estimator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

LOG_RATIO_CLAMP = 20.0
K3_VALUE_CLAMP = 10.0


def _log_ratio(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    if log_probs.shape != ref_log_probs.shape:
        raise ValueError(
            f"log_probs {tuple(log_probs.shape)} and ref_log_probs "
            f"{tuple(ref_log_probs.shape)} must have the same shape"
        )
    # float32 at least: bf16 log-prob differences lose most of their digits.
    dtype = torch.promote_types(log_probs.dtype, torch.float32)
    return log_probs.to(dtype) - ref_log_probs.detach().to(dtype)


def kl_k1(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """k1 = log p - log q."""
    return _log_ratio(log_probs, ref_log_probs)


def kl_abs(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """|log p - log q|."""
    return _log_ratio(log_probs, ref_log_probs).abs()


def kl_k2(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * (log p - log q)^2 (called "mse" in verl/EasyR1)."""
    return 0.5 * _log_ratio(log_probs, ref_log_probs).square()


def kl_k3(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """k3 = exp(d) - d - 1 with d = clamp(log q - log p, ±20); result clamped to ±10."""
    d = (-_log_ratio(log_probs, ref_log_probs)).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return (torch.exp(d) - d - 1.0).clamp(-K3_VALUE_CLAMP, K3_VALUE_CLAMP)


KlFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Names as verl/EasyR1 users write them (`algorithm.kl_penalty`).
KL_ESTIMATORS: dict[str, KlFn] = {
    "kl": kl_k1,
    "k1": kl_k1,
    "abs": kl_abs,
    "mse": kl_k2,
    "k2": kl_k2,
    "low_var_kl": kl_k3,
    "k3": kl_k3,
}


def kl_divergence(name: str, log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate [N, T] by estimator name (see module docstring)."""
    try:
        estimator = KL_ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown KL estimator {name!r}; choose one of {sorted(KL_ESTIMATORS)} "
            "('full' needs whole distributions and is not supported)"
        ) from None
    return estimator(log_probs, ref_log_probs)
