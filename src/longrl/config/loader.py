"""YAML recipe + dotted overrides -> a validated config, before any heavy work.

`longrl rl recipe.yaml worker.rollout.n=8 data.fps=1` : each override is
`dotted.key=value`, the value parsed as YAML (`8` int, `1e-6` float, `[a, b]`
list, `null`). Unknown keys and wrong types raise `ConfigError` naming the
key, what was given and what is allowed.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from longrl.config.root import RunConfig

T = TypeVar("T", bound=BaseModel)

# Keys Long-RL / EasyR1 users have in their scripts whose concept lives under
# another name here. Documented in docs/config.md.
KEY_ALIASES: dict[str, str] = {
    "worker.actor.cached_embeds_dir": "data.cache_dir",
    "worker.reward.score_function": "worker.reward.reward_function",
    "trainer.save_checkpoint_path": "trainer.output_dir",
    "trainer.load_checkpoint_path": "trainer.resume",
    "trainer.total_episodes": "trainer.total_epochs",
}


class ConfigError(ValueError):
    """A recipe or override that does not fit the schema; the message says how to fix it."""


def load_config(
    recipe: str | Path | None, overrides: list[str] = (), schema: type[T] = RunConfig
) -> T:
    tree: dict[str, Any] = {}
    source = "defaults"
    if recipe is not None:
        source = str(recipe)
        tree = _read_yaml(Path(recipe))
    tree = _apply_aliases(tree, source)
    for item in overrides:
        key, value = _parse_override(item)
        key = KEY_ALIASES.get(key, key)
        _check_key_exists(schema, key, f"override {item!r}")
        _seed_dict_default(tree, schema, key)
        _set_dotted(tree, key, value)
    return validate_tree(tree, schema, source)


def validate_tree(tree: dict[str, Any], schema: type[T], source: str = "config") -> T:
    try:
        return schema.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_explain(err, schema, source)) from None


def dump_config(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of sections (data:, worker:, ...)")
    return tree


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    key = key.strip().removeprefix("--")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected dotted.key=value, e.g. worker.rollout.n=8")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def _seed_dict_default(tree: dict[str, Any], schema: type[BaseModel], dotted: str) -> None:
    """`worker.reward.functions.format=0` edits the default mapping, not replaces it."""
    for dict_key in _DICT_VALUED_KEYS:
        if not dotted.startswith(dict_key + "."):
            continue
        node: Any = tree
        for part in dict_key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            *parents, leaf = dict_key.split(".")
            section = _model_at(schema, parents)
            default = section.model_fields[leaf].get_default(call_default_factory=True)
            _set_dotted(tree, dict_key, dict(default))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in _DICT_VALUED_KEYS:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


# Keys whose value is itself a mapping (not a section).
_DICT_VALUED_KEYS = {"worker.reward.functions"}


def _apply_aliases(tree: dict[str, Any], source: str) -> dict[str, Any]:
    flat = _flatten(tree)
    if not any(key in KEY_ALIASES for key in flat):
        return tree
    rebuilt: dict[str, Any] = {}
    for key, value in flat.items():
        target = KEY_ALIASES.get(key, key)
        if target != key and target in flat and flat[target] != value:
            raise ConfigError(
                f"{source}: {key} is an alias of {target}, and both are set to different values"
            )
        _set_dotted(rebuilt, target, value)
    return rebuilt


def _check_key_exists(schema: type[BaseModel], dotted: str, where: str) -> None:
    model: type[BaseModel] = schema
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            prefix = ".".join(parts[:depth])
            raise ConfigError(f"{where}: {_unknown_key_message(prefix, part, list(fields))}")
        annotation = fields[part].annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if depth < len(parts) - 1:
            if not is_section:
                if ".".join(parts[: depth + 1]) in _DICT_VALUED_KEYS:
                    return
                raise ConfigError(
                    f"{where}: {'.'.join(parts[: depth + 1])} is a value, not a section"
                )
            model = annotation


def _unknown_key_message(prefix: str, key: str, allowed: list[str]) -> str:
    full = f"{prefix}.{key}" if prefix else key
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" Did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else ""
    return f"unknown key {full!r}.{hint} Allowed under {prefix or 'the top level'}: {', '.join(allowed)}"


def _explain(err: ValidationError, schema: type[BaseModel], source: str) -> str:
    lines = [f"{source}: invalid config"]
    for problem in err.errors():
        loc = [str(part) for part in problem["loc"]]
        dotted = ".".join(loc)
        if problem["type"] == "extra_forbidden":
            parent = _model_at(schema, loc[:-1])
            allowed = list(parent.model_fields) if parent else []
            lines.append("  " + _unknown_key_message(".".join(loc[:-1]), loc[-1], allowed))
        else:
            given = problem.get("input")
            where = dotted or "(top level)"
            shown = "" if isinstance(given, dict) else f" (got {given!r})"
            lines.append(f"  {where}: {problem['msg']}{shown}")
    return "\n".join(lines)


def _model_at(schema: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    model = schema
    for part in loc:
        field = model.model_fields.get(part)
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return None
        model = field.annotation
    return model
