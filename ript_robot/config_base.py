"""The base of every typed config (`ript_robot.config`): unknown keys are errors, and so are bad values."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration file or override is malformed; the message says where and how to fix it."""


class ConfigModel(BaseModel):
    """Base for all configs: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
