"""Converts between frozen config dataclasses and plain YAML/JSON-able mappings.

Every config in terarec is a frozen dataclass whose fields are ``bool``, ``int``, ``float``,
``str``, an ``enum.Enum``, a ``tuple[T, ...]``, ``X | None`` or a nested config. This module
builds them from mappings (YAML files, command-line ``key=value`` overrides) and back, and
turns every mistake into a one-line :class:`~terarec.errors.ConfigError` naming the dotted key:
unknown keys come with a "did you mean" suggestion, wrong types say what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import types
import typing
from collections.abc import Mapping

import yaml

from terarec.errors import ConfigError

__all__ = ["from_mapping", "to_mapping", "with_override"]

T = typing.TypeVar("T")
_Plain = bool | int | float | str | None | list["_Plain"] | dict[str, "_Plain"]


def _field_types(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"


_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtp])(i?)b?\s*$", re.IGNORECASE)


def _parse_integer(text: str) -> object:
    """``"4096"``, ``"1_000_000"``, ``"2e9"``, or a size: ``"512MB"`` (10^6), ``"2GiB"`` (2^30).
    Anything else comes back as parsed YAML for the caller to reject."""
    size = _SIZE.match(text)
    if size:
        number, unit, binary = size.groups()
        scale = (1024 if binary else 1000) ** ("kmgtp".index(unit.lower()) + 1)
        return float(number) * scale
    try:
        return float(text.replace("_", "")) if any(c in text for c in ".eE") else int(text.replace("_", ""))
    except ValueError:
        return yaml.safe_load(text)


def _convert(value: object, annotation: object, key: str) -> object:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        errors = []
        for option in options:
            try:
                return _convert(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(annotation)
        if isinstance(value, str) and value.lstrip().startswith("["):
            try:  # a YAML flow list, which may nest: "[[C1, C2], [C3, C4]]"
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"{key}: not a valid list: {value!r}") from None
        elif isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_convert(item, item_type, f"{key}[{index}]") for index, item in enumerate(value))
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {annotation.__name__} fields, got {value!r}")
        return from_mapping(annotation, value, key)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        if isinstance(value, annotation):
            return value
        choices = [member.value for member in annotation]
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(map(str, choices))}, got {value!r}")
        return annotation(value)
    if annotation is bool:
        if isinstance(value, str):
            parsed = yaml.safe_load(value)
            value = parsed if isinstance(parsed, bool) else value
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, str):
            value = _parse_integer(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported config type {annotation!r}")


def from_mapping(cls: type[T], raw: Mapping[str, object], prefix: str = "") -> T:
    """Builds config dataclass ``cls`` from ``raw``, checking every key and value.

    Args:
        cls (type): a config dataclass.
        raw (Mapping[str, object]): field values; missing fields keep their defaults.
        prefix (str, optional): dotted path of ``cls`` inside the root config, for messages.
            Default: ``""``

    Raises:
        ConfigError: naming the dotted key of an unknown field or a bad value.

    Example::

        >>> from terarec.models import DLRMConfig
        >>> from_mapping(DLRMConfig, {"top_mlp": [32, 16]}).top_mlp
        (32, 16)
        >>> from_mapping(DLRMConfig, {"top_mpl": [32]}, "model.dlrm")
        Traceback (most recent call last):
        ...
        terarec.errors.ConfigError: unknown config key 'model.dlrm.top_mpl'; did you mean 'top_mlp'?
    """
    hints = _field_types(cls)
    names = [field.name for field in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, object] = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {dotted!r}{_suggest(str(key), names)}")
        kwargs[key] = _convert(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        where = f"{prefix}: " if prefix and not str(error).startswith(prefix) else ""
        raise ConfigError(f"{where}{error}") from None


def to_mapping(config: object) -> dict[str, _Plain]:
    """The plain (YAML/JSON-able) form of a config dataclass; :func:`from_mapping` inverts it."""

    def plain(value: object) -> _Plain:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, (tuple, list)):
            return [plain(item) for item in value]
        return value  # type: ignore[return-value]

    result = plain(config)
    if not isinstance(result, dict):
        raise TypeError(f"expected a config dataclass, got {type(config).__name__}")
    return result


def with_override(raw: dict[str, _Plain], dotted_key: str, value: _Plain) -> dict[str, _Plain]:
    """Returns a copy of mapping ``raw`` with ``dotted_key`` (e.g. ``train.batch_size``) set to ``value``.

    Example::

        >>> with_override({"train": {"seed": 0}}, "train.seed", 3)
        {'train': {'seed': 3}}
    """
    head, _, rest = dotted_key.partition(".")
    if not head:
        raise ConfigError(f"empty config key in override {dotted_key!r}")
    result = dict(raw)
    if not rest:
        result[head] = value
        return result
    child = result.get(head)
    if child is None:
        child = {}
    if not isinstance(child, dict):
        raise ConfigError(f"cannot set {dotted_key!r}: {head!r} is not a section")
    result[head] = with_override(child, rest, value)
    return result
