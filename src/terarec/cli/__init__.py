"""The ``terarec`` command line."""

from terarec.cli.main import main

__all__ = ["main"]
