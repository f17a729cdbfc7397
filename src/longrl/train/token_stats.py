"""Log-prob of the chosen token and entropy, from logits over the vocabulary, fused.

For logits z [..., V] (divided by the temperature), chosen ids y:

  lse      = logsumexp(z)                       p = exp(z - lse)
  log_prob = z[y] - lse
  entropy  = lse - sum_v p_v z_v                (= -sum_v p_v log p_v)

and the gradients, written out by hand so that autograd keeps nothing of size
[tokens, V] but the logits themselves:

  d log_prob / dz = onehot(y) - p
  d entropy  / dz = -p * (z - E_p[z]),          E_p[z] = sum_v p_v z_v = lse - entropy

`torch.log_softmax` + gather + `(exp(lsm) * lsm).sum()` makes five [tokens, V] float32
tensors in the forward and as many again in the backward; over a 150k vocabulary that
is most of the step's memory traffic outside the matmuls. Here each pass works on
row chunks of at most `CHUNK_ELEMENTS` (float32 temporaries of that size, any logits
dtype), in about a third of the passes over the vocabulary. Equal to the log_softmax
formulation to float rounding (tests/unit/test_token_stats.py: values 1e-5, gradients
rtol 1e-4). Logits must be finite (as a model's are).
"""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 22  # float32 temporaries of 16 MiB per pass


def _rows_per_chunk(vocab: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, vocab))


class _TokenStats(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, ids, scale, with_entropy):
        rows, vocab = logits.shape
        lse = torch.empty(rows, dtype=_compute_dtype(logits), device=logits.device)
        chosen = torch.empty_like(lse)
        expected = torch.empty_like(lse) if with_entropy else None
        step = _rows_per_chunk(vocab)
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            z = _scaled(logits[start:stop], scale)
            top = z.amax(dim=-1, keepdim=True)
            p = torch.sub(z, top).exp_()
            total = p.sum(dim=-1, keepdim=True)
            lse[start:stop] = (top + total.log()).squeeze(-1)
            chosen[start:stop] = z.gather(-1, ids[start:stop, None]).squeeze(-1)
            if with_entropy:  # E_p[z] from the unnormalised weights
                expected[start:stop] = torch.linalg.vecdot(p, z) / total.squeeze(-1)
        log_probs = chosen - lse
        entropy = lse - expected if with_entropy else None
        ctx.save_for_backward(logits, ids, lse, expected)
        ctx.scale = scale
        if entropy is None:
            entropy = torch.zeros_like(log_probs)
            ctx.mark_non_differentiable(entropy)
        return log_probs, entropy

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy):
        logits, ids, lse, expected = ctx.saved_tensors
        scale = ctx.scale
        rows, vocab = logits.shape
        grad = torch.empty_like(logits)
        if grad_log_probs is None:
            grad_log_probs = torch.zeros_like(lse)
        use_entropy = expected is not None and grad_entropy is not None
        step = _rows_per_chunk(vocab)
        direct = grad.dtype == lse.dtype  # write each chunk straight into `grad`
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            z = _scaled(logits[start:stop], scale)
            a = grad_log_probs[start:stop, None].to(z.dtype)
            p = torch.sub(z, lse[start:stop, None], out=grad[start:stop] if direct else None)
            p.exp_()
            if use_entropy:
                b = grad_entropy[start:stop, None].to(z.dtype)
                # -p * (a + b (z - E)) = -p * (b z + (a - b E))
                p.mul_(torch.addcmul(a - b * expected[start:stop, None], z, b))
            else:
                p.mul_(a)
            p.neg_().scatter_add_(-1, ids[start:stop, None], a)
            if scale != 1.0:
                p.div_(scale)
            if not direct:
                grad[start:stop] = p
        return grad, None, None, None


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    """float32, or float64 for float64 logits (gradcheck)."""
    return torch.promote_types(logits.dtype, torch.float32)


def _scaled(logits: torch.Tensor, scale: float) -> torch.Tensor:
    z = logits.to(_compute_dtype(logits))
    return z / scale if scale != 1.0 else z


def token_log_probs_and_entropy(
    logits: torch.Tensor,
    ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log_softmax(logits / T)[ids] and (optionally) the entropy of softmax(logits / T).

    logits [..., V], ids [...] (long); returns float32 tensors of shape [...] (float64 for
    float64 logits). Temperature
    0 reads as 1 (greedy rollouts score the raw distribution), as everywhere in longrl.
    """
    scale = float(temperature) if temperature > 0 else 1.0
    lead = ids.shape
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_ids = ids.reshape(-1)
    log_probs, entropy = _TokenStats.apply(flat_logits, flat_ids, scale, with_entropy)
    log_probs = log_probs.reshape(lead)
    return log_probs, entropy.reshape(lead) if with_entropy else None
