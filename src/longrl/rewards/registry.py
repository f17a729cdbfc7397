"""Reward functions by config name, and resolution of a spec to a callable.

A spec is a built-in name (a key of REWARD_FUNCTIONS) or a user file
"path/to/file.py:name". Settings that are not dataset columns are bound as
keyword arguments: `resolve_reward_function("overlong", max_len=512, buffer=128)`.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from longrl.rewards.builtin import format_reward, multiple_choice_accuracy, soft_overlong_reward
from longrl.rewards.errors import RewardError
from longrl.rewards.loader import is_file_spec, load_reward_function
from longrl.rewards.safe_call import RewardFn

REWARD_FUNCTIONS: dict[str, RewardFn] = {
    "accuracy": multiple_choice_accuracy,
    "mc_accuracy": multiple_choice_accuracy,
    "format": format_reward,
    "overlong": soft_overlong_reward,
    "soft_overlong": soft_overlong_reward,
}


def resolve_reward_function(spec: str, **settings: Any) -> RewardFn:
    """The reward callable for `spec`, with `settings` bound as keyword arguments."""
    if is_file_spec(spec):
        fn = load_reward_function(spec)
    else:
        try:
            fn = REWARD_FUNCTIONS[spec]
        except KeyError:
            raise RewardError(
                f"unknown reward {spec!r}; built-ins are {sorted(REWARD_FUNCTIONS)}, "
                "or give a user function as 'path/to/file.py:function_name'"
            ) from None
        # Built-ins swallow unknown columns with **_, so check settings by name here:
        # a misspelt setting must not be silently ignored.
        named = set(inspect.signature(fn).parameters)
        unknown = sorted(set(settings) - named)
        if unknown:
            raise RewardError(f"reward {spec!r} has no setting(s) {unknown}")
    return functools.partial(fn, **settings) if settings else fn
