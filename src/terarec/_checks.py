"""Checks shared by the config sections of several layers."""

from __future__ import annotations

from terarec.errors import ConfigError

__all__ = ["as_names"]


def as_names(section: object, name: str, key: str) -> tuple[str, ...]:
    """The field ``name`` of a frozen config ``section`` as a tuple of distinct non-empty names
    (a YAML list becomes a tuple in place).

    Raises:
        ConfigError: naming ``key`` when the value is not such a list.

    Example::

        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Section:
        ...     columns: tuple[str, ...] = ()
        >>> as_names(Section(["a", "b"]), "columns", "data.columns")
        ('a', 'b')
    """
    value = getattr(section, name)
    if isinstance(value, list):
        value = tuple(value)
        object.__setattr__(section, name, value)
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key} must be a list of names, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{key} names one twice: {list(value)}")
    return value
