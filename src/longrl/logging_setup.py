"""Console logging for the commands: our loggers at INFO, third parties at WARNING."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str | None = None) -> None:
    level = level or os.environ.get("LONGRL_LOG_LEVEL", "INFO")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("longrl").setLevel(level)
