"""Typed run configuration: YAML recipe + dotted overrides, validated up front."""

from longrl.config.loader import ConfigError, dump_config, load_config
from longrl.config.root import RunConfig

__all__ = ["ConfigError", "RunConfig", "dump_config", "load_config"]
