"""The reference documents, generated from the code: every config key with its type, default
and meaning (from the config dataclasses and their docstrings), and the Python API (every
public name of each package with its signature and summary).

    python -m terarec.cli.reference docs

A test regenerates both and fails when ``docs/config.md`` or ``docs/api.md`` is stale, or when
a config field has no description in its class's ``Args:``.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import re
import sys
import types
import typing
from pathlib import Path

from terarec.train.config import Config

__all__ = ["API_PACKAGES", "api_reference", "config_reference", "config_rows", "field_descriptions", "main"]

API_PACKAGES = (
    "terarec.sparse",
    "terarec.data",
    "terarec.embedding",
    "terarec.models",
    "terarec.sharding",
    "terarec.train",
    "terarec.serve",
)
"""The packages whose ``__all__`` is the public Python API, lower layers first."""

_ENTRY = re.compile(r"^(\w+) \(([^)]*)\):\s*(.*)$")
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data):`~?(?:[\w.]+\.)?([\w]+)(?:\(\))?`")
_MATH = re.compile(r":math:`([^`]*)`")


def field_descriptions(cls: type) -> dict[str, str]:
    """Each field's description from the ``Args:`` section of ``cls``'s docstring, its
    ``Default:`` clause removed (the reference computes defaults from the fields)."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    lines = doc.splitlines()
    if "Args:" not in lines:
        return {}
    out: dict[str, str] = {}
    current = None
    for line in lines[lines.index("Args:") + 1 :]:
        if line and not line.startswith(" "):
            break  # the next section (Example::, Raises:, ...)
        entry = _ENTRY.match(line.strip()) if line.startswith("    ") and not line.startswith("     ") else None
        if entry:
            current = entry.group(1)
            out[current] = entry.group(3)
        elif current is not None and line.strip():
            out[current] += " " + line.strip()
    return {name: _plain(re.sub(r"\s*Default: .*$", "", text)) for name, text in out.items()}


def _plain(text: str) -> str:
    text = _MATH.sub(r"\1", _ROLE.sub(r"\1", text))
    return text.replace("``", "`").replace("|", "\\|").strip()


def _base(annotation: object) -> tuple[object, bool]:
    """The annotation without ``| None``, and whether ``None`` was allowed."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


def _type_name(annotation: object) -> str:
    base, optional = _base(annotation)
    if isinstance(base, type) and issubclass(base, enum.Enum):
        name = " \\| ".join(f"`{member.value}`" for member in base)
    elif typing.get_origin(base) is tuple:
        inner = typing.get_args(base)[0]
        name = f"list of {_type_name(inner)}"
    elif isinstance(base, type):
        name = base.__name__
    else:
        name = str(base).replace("|", "\\|")
    return f"{name} or null" if optional else name


def _default_text(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, tuple):
        return "[" + ", ".join(_default_text(v).strip("`") for v in value) + "]"
    return f"`{value}`"


def _rows(cls: type, prefix: str, default: object) -> list[tuple[str, str, str, str]]:
    hints = typing.get_type_hints(cls)
    described = field_descriptions(cls)
    rows = []
    for spec in dataclasses.fields(cls):
        key, annotation = f"{prefix}{spec.name}", hints[spec.name]
        value = getattr(default, spec.name) if default is not None else _field_default(spec)
        base, _ = _base(annotation)
        meaning = described.get(spec.name, "")
        element = typing.get_args(base)[0] if typing.get_origin(base) is tuple else None
        if dataclasses.is_dataclass(base):
            if value is None:
                rows.append((key, _type_name(annotation), "null", meaning + " Setting any key below sets it."))
            rows.extend(_rows(base, f"{key}.", value))  # type: ignore[arg-type]
        elif dataclasses.is_dataclass(element):
            rows.append((key, f"list of {element.__name__}", _default_text(value), meaning))  # type: ignore[union-attr]
            rows.extend(_rows(element, f"{key}[i].", None))  # type: ignore[arg-type]
        else:
            rows.append((key, _type_name(annotation), _default_text(value), meaning))
    return rows


def _field_default(spec: dataclasses.Field) -> object:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None  # a required field (a table's name): no default


def config_rows() -> list[tuple[str, str, str, str]]:
    """Every key of :class:`~terarec.train.Config`: ``(key, type, default, meaning)``."""
    return _rows(Config, "", Config())


def config_reference() -> str:
    """The Markdown reference of every config key, section by section."""
    sections: dict[str, list[tuple[str, str, str, str]]] = {}
    for row in config_rows():
        sections.setdefault(row[0].split(".")[0], []).append(row)
    out = [
        "# Configuration reference",
        "",
        "Every key of terarec's config tree: set it in a YAML file (`--config`), or with",
        "`--set key=value` on the command line. Generated from the config classes by",
        "`python -m terarec.cli.reference docs`; do not edit by hand.",
        "",
    ]
    for section, rows in sections.items():
        out += [f"## `{section}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        out += [f"| `{key}` | {kind} | {default} | {meaning} |" for key, kind, default, meaning in rows]
        out.append("")
    return "\n".join(out)


def _summary(obj: object) -> str:
    """The first paragraph of ``obj``'s docstring, on one line."""
    doc = inspect.getdoc(obj) or ""
    return _plain(" ".join(doc.split("\n\n")[0].split()))


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj)).replace("'", "")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def _entry(name: str, obj: object) -> str:
    """One line of the API reference."""
    if inspect.isclass(obj) and issubclass(obj, enum.Enum):
        values = ", ".join(f"`{member.value}`" for member in obj)
        return f"- **`{name}`** (enum: {values}): {_summary(obj)}"
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and name.endswith("Config"):
        return f"- **`{name}`** (config class; its keys are in [config.md](config.md)): {_summary(obj)}"
    if inspect.isclass(obj):
        return f"- **`{name}`** (class) `{name}{_signature(obj)}`: {_summary(obj)}"
    if callable(obj):
        return f"- **`{name}`** (function) `{name}{_signature(obj)}`: {_summary(obj)}"
    plain = isinstance(obj, (bool, int, float, str)) and len(repr(obj)) <= 60
    return f"- **`{name}`** (constant): `{repr(obj) if plain else type(obj).__name__}`"


def api_reference() -> str:
    """The Markdown reference of the public Python API, package by package."""
    out = [
        "# Python API reference",
        "",
        "Every public name of terarec's packages (their `__all__`), with its signature and the first",
        "paragraph of its docstring; `help(name)` shows the rest, with shapes and an example.",
        "Generated by `python -m terarec.cli.reference docs`; do not edit by hand.",
        "",
    ]
    for package in API_PACKAGES:
        module = importlib.import_module(package)
        out += [f"## `{package}`", "", _summary(module), ""]
        out += [_entry(name, getattr(module, name)) for name in sorted(module.__all__, key=str.lower)]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Writes ``config.md`` and ``api.md`` into the directory given, or prints both."""
    args = sys.argv[1:] if argv is None else argv
    documents = {"config.md": config_reference(), "api.md": api_reference()}
    if not args:
        print("\n".join(documents.values()))
        return
    directory = Path(args[0])
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in documents.items():
        (directory / name).write_text(text)


if __name__ == "__main__":
    main()
