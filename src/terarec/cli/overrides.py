"""Command-line flags as dotted config overrides, shared by every ``terarec`` command."""

from __future__ import annotations

import argparse

from terarec.errors import TerarecError

__all__ = ["flag_overrides"]


def flag_overrides(args: argparse.Namespace, shortcuts: dict[str, str]) -> list[tuple[str, object]]:
    """``(dotted key, value)`` for every shortcut flag given (``shortcuts`` maps a flag's
    destination to its key), ``--resume`` and ``--no-progress``, then each ``--set KEY=VALUE``
    in order, so that ``--set`` wins over a shortcut for the same key.

    Raises:
        TerarecError: a ``--set`` without ``=`` or without a key.

    Example::

        >>> args = argparse.Namespace(seed=3, set=["train.epochs=2"])
        >>> flag_overrides(args, {"seed": "train.seed"})
        [('train.seed', 3), ('train.epochs', '2')]
    """
    pairs: list[tuple[str, object]] = [
        (key, getattr(args, flag)) for flag, key in shortcuts.items() if getattr(args, flag, None) is not None
    ]
    if getattr(args, "resume", False):
        pairs.append(("train.resume", True))
    if getattr(args, "no_progress", False):
        pairs.append(("train.progress", False))
    for assignment in getattr(args, "set", []):
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise TerarecError(f"--set expects KEY=VALUE, got {assignment!r}")
        pairs.append((key.strip(), value))
    return pairs
