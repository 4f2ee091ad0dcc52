"""Every command answers --help and is documented in the README."""

from __future__ import annotations

import argparse

import pytest

from agent.cli import build_parser as agent_parser
from fleet.cli import build_parser as fleet_parser
from tests.conftest import ROOT, run_cli
from trainer.cli import build_parser as trainer_parser

CLIS = {
    "agent": ("edge-agent", agent_parser),
    "trainer": ("edge-trainer", trainer_parser),
    "fleet": ("edge-fleet", fleet_parser),
}


def _commands(parser: argparse.ArgumentParser) -> list[list[str]]:
    out = []
    for action in parser._subparsers._group_actions:  # argparse has no public walker
        for name, sub in action.choices.items():
            nested = _commands(sub) if sub._subparsers else [[]]
            out += [[name, *rest] for rest in nested]
    return out


@pytest.mark.parametrize("package", sorted(CLIS))
def test_every_command_has_help_and_is_in_the_readme(package):
    script, build = CLIS[package]
    readme = (ROOT / "README.md").read_text()
    for command in _commands(build()):
        result = run_cli(package, *command, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout, (command, result.stderr)
        assert f"{script} {' '.join(command)}" in readme, f"README lacks `{script} {command}`"
