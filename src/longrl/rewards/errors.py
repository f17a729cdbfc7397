"""The one error type of longrl.rewards: bad reward configuration or a broken contract."""


class RewardError(ValueError):
    """A reward spec, a reward file, a column or a reward function's output is unusable.

    The message names the function/file/column and says what to change. Per-sample
    exceptions raised INSIDE reward functions are not turned into this error unless
    `on_error="raise"`; they are caught, logged, counted and scored (see safe_call).
    """
