"""Load a user reward function from "path/to/file.py:name".

The file is imported from its path with importlib (it need not be on
sys.path, and it runs as ordinary Python: only load files you trust). Each
file gets its own module name, so two files may both define `reward`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from longrl.rewards.errors import RewardError
from longrl.rewards.safe_call import RewardFn

_loaded: dict[Path, ModuleType] = {}


def is_file_spec(spec: str) -> bool:
    """True for "something.py:name" (a user file), False for a built-in name."""
    path, sep, _ = spec.rpartition(":")
    return bool(sep) and path.endswith(".py")


def _import_file(path: Path) -> ModuleType:
    if path in _loaded:
        return _loaded[path]
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    module_name = f"longrl_user_reward_{path.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise RewardError(f"cannot import reward file {path} (not a Python source file?)")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before exec so dataclasses/typing inside the file can find their module.
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise RewardError(
            f"reward file {path} failed to import: {type(err).__name__}: {err}"
        ) from err
    _loaded[path] = module
    return module


def load_reward_function(spec: str) -> RewardFn:
    """The callable `name` defined in the file of spec "path/to/file.py:name"."""
    path_text, sep, name = spec.rpartition(":")
    if not sep or not path_text.endswith(".py") or not name:
        raise RewardError(
            f"reward spec {spec!r} is not of the form 'path/to/file.py:function_name'"
        )
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise RewardError(f"reward file {path_text} not found (resolved to {path})")
    module = _import_file(path)
    if not hasattr(module, name):
        available = sorted(
            key
            for key, value in vars(module).items()
            if callable(value) and not key.startswith("_")
        )
        raise RewardError(
            f"reward file {path_text} defines no {name!r}; callables defined there: {available}"
        )
    fn = getattr(module, name)
    if not callable(fn):
        raise RewardError(
            f"{name!r} in reward file {path_text} is a {type(fn).__name__}, not a function"
        )
    return fn
