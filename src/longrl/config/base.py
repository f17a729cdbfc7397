"""Base class for every config section: unknown keys are errors, types are strict."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # extra="forbid": a misspelt key must fail before any heavy work, not be ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
