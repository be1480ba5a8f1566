"""The one family of errors lungcls raises on purpose.

Everything derives from :class:`LungclsError`, so a caller can catch it once. Each message says
what went wrong, which file or field, and (where there is one) what to do.
"""

from __future__ import annotations

from pathlib import Path


class LungclsError(Exception):
    """Base class of every error lungcls raises on purpose."""


class ImageReadError(LungclsError):
    """An image or mask could not be read: names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DataError(LungclsError):
    """A dataset, manifest or cache is malformed or cannot be found."""


class ConfigError(LungclsError):
    """A configuration value is invalid: names the field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"config field '{field}': {reason}")


class CheckpointError(LungclsError):
    """A checkpoint is missing, incomplete or not in the safe format."""
