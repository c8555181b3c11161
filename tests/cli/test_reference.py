"""docs/config.md and docs/api.md are generated from the code, and stay so."""

from __future__ import annotations

from pathlib import Path

import importlib

from terarec.cli.reference import API_PACKAGES, api_reference, config_reference, config_rows, field_descriptions
from terarec.train import load_config
from terarec.train.config import TrainConfig

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_documents_are_current() -> None:
    assert (DOCS / "config.md").read_text() == config_reference(), "regenerate: python -m terarec.cli.reference docs"
    assert (DOCS / "api.md").read_text() == api_reference(), "regenerate: python -m terarec.cli.reference docs"


def test_every_public_name_is_in_the_api_reference() -> None:
    text = api_reference()
    for package in API_PACKAGES:
        for name in importlib.import_module(package).__all__:
            assert f"**`{name}`**" in text, (package, name)


def test_every_key_is_described_and_every_leaf_key_is_settable() -> None:
    rows = config_rows()
    assert not [key for key, _, _, meaning in rows if not meaning], "a config field lacks its Args: entry"
    # keys of sections that are unset by default (embedding.tiered, ...) may need a sibling
    # set with them; every other key takes its documented default back
    optional = tuple(f"{key}." for key, kind, _, _ in rows if "Config" in kind)
    for key, _, default, _ in rows:
        if "[i]" in key or key.startswith(optional) or default == "null" or default.startswith("["):
            continue
        load_config(overrides=[(key, default.strip("`"))])


def test_descriptions_come_from_the_args_section_without_defaults() -> None:
    described = field_descriptions(TrainConfig)
    assert described["eval_every"] == "steps between validations; `0` validates after every epoch."
    assert all("Default:" not in text for text in described.values())
