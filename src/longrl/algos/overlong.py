"""DAPO's soft overlong penalty (a reward term that punishes running into max_len).

With length L, the maximum length M and a buffer B (0 <= B <= M), and factor f:

    penalty(L) = 0                       if L <= M - B
               = f * (M - B - L) / B     if M - B < L <= M   (linear from 0 to -f)
               = -f                      if L > M

B = 0 is a step: 0 up to M, -f beyond. Example M=100, B=20, f=1:
L=80 -> 0, L=85 -> -0.25, L=90 -> -0.5, L=100 -> -1, L=120 -> -1.
"""

from __future__ import annotations


def soft_overlong_penalty(
    length: int, max_len: int, buffer: int, penalty_factor: float = 1.0
) -> float:
    """The penalty above for one response of `length` tokens."""
    if max_len <= 0:
        raise ValueError(f"max_len must be > 0, got {max_len}")
    if not 0 <= buffer <= max_len:
        raise ValueError(f"buffer must be in [0, max_len={max_len}], got {buffer}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if length > max_len:
        return -float(penalty_factor)
    expected = max_len - buffer
    if length <= expected:
        return 0.0
    return penalty_factor * (expected - length) / buffer
