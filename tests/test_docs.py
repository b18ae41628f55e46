"""The documents that ship with the project tell the truth about the code they describe."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from sidecar.config import Rate, Settings
from sidecar.config.load import _unknown_environment

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"


def config_keys(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Every configurable key's dotted path; a rate (`{requests, per_seconds}`) is one key."""
    keys = []
    for name, field in model.model_fields.items():
        sections = [
            arg
            for arg in (field.annotation, *typing.get_args(field.annotation))
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg is not Rate
        ]
        if sections and name != "routes":
            keys += config_keys(sections[0], f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


@pytest.mark.parametrize("key", config_keys())
def test_every_config_key_is_in_the_reference(key: str) -> None:
    """Named with its environment variable, which the settings loader really reads."""
    env = "SIDECAR_" + key.upper().replace(".", "__")
    assert f"| `{key}` | `{env}` |" in CONFIGURATION.read_text(encoding="utf-8"), key
    assert _unknown_environment({env: "x"}) == []  # the loader takes it as that key


def test_the_reference_names_no_key_that_does_not_exist() -> None:
    keys = set(config_keys())
    rows = [
        line.split("`")[1]
        for line in CONFIGURATION.read_text(encoding="utf-8").splitlines()
        if line.startswith("| `")
    ]
    assert rows
    assert [row for row in rows if row not in keys] == []


def test_nothing_points_outside_the_repository() -> None:
    """Users have the repository only: README and docs/ must stand alone."""
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for document in documents:
        outside = ".." + "/shared"  # spelled in two parts: this file must not match itself
        assert outside not in document.read_text(encoding="utf-8"), document.name


def test_the_readme_images_are_in_the_repository_and_none_is_a_test_output() -> None:
    """The tests rewrite screenshots/ (git-ignored) on every run; the README shows a committed
    copy instead, so a test run never changes what the README displays."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert images
    for image in images:
        assert (ROOT / image).is_file(), image
        assert not image.startswith("screenshots/"), image
    assert "/screenshots/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
