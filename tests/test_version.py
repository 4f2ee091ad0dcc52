"""`--version` on the three commands (issue 17, item 1): the package version, from the checkout's
pyproject.toml when run from a checkout and from the installed metadata otherwise (the fresh
install in tests/test_install.py checks that side)."""

from __future__ import annotations

import tomllib

import pytest

from agent.version import package_version
from tests.conftest import ROOT, run_cli

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.mark.parametrize(
    ("package", "prog"),
    [("agent", "edge-agent"), ("trainer", "edge-trainer"), ("fleet", "edge-fleet")],
)
def test_version_prints_the_package_version(package: str, prog: str) -> None:
    result = run_cli(package, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{prog} {VERSION}\n"
    assert result.stderr == ""


def test_a_checkout_answers_with_its_own_pyproject() -> None:
    assert package_version() == VERSION
