"""The library's error hierarchy.

Every error terarec raises on purpose derives from :class:`TerarecError`; each kind also
subclasses :class:`ValueError`, so callers that only know the standard library can still
catch them. Messages say what was expected, what came, and where (``file:line:column``
for data, the dotted key for configuration, table names and byte counts for memory plans).
"""

from __future__ import annotations

__all__ = ["TerarecError", "ConfigError", "DataError", "PlanError"]


class TerarecError(ValueError):
    """Base class of every error terarec raises deliberately."""


class ConfigError(TerarecError):
    """A configuration key or value is unknown or impossible; the message names the dotted key."""


class DataError(TerarecError):
    """Input data is missing or malformed; the message names ``file:line:column`` where known."""


class PlanError(TerarecError):
    """A model does not fit the memory (or other resources) available; the message gives the numbers."""
