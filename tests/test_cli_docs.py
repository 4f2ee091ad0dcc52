"""Every command answers --help and is documented in docs/cli.md, whose reference is generated."""

from __future__ import annotations

import argparse

import pytest

from agent.cli import build_parser as agent_parser
from fleet.cli import build_parser as fleet_parser
from scripts.cli_doc import MARKER, page_with_reference, walk
from scripts.cli_doc import help_text as rendered_help
from tests.conftest import ROOT, run_cli
from trainer.cli import build_parser as trainer_parser

CLI_PAGE = ROOT / "docs" / "cli.md"
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
def test_every_command_has_help_and_is_in_the_docs(package):
    """The generated reference lists every command by itself; the hand-written table above it
    must name each one too, so a new command gets a line that says what it is for."""
    script, build = CLIS[package]
    table = CLI_PAGE.read_text().partition(MARKER)[0]
    rendered = {tuple(words): rendered_help(parser) for words, parser in walk(build())}
    for command in _commands(build()):
        result = run_cli(package, *command, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout, (command, result.stderr)
        # What the reference shows is what --help prints (wrapped at the terminal's width).
        assert result.stdout.split() == rendered[tuple(command)].split(), command
        assert f"{script} {' '.join(command)}" in table, f"docs/cli.md lacks `{script} {command}`"


def test_cli_reference_is_what_the_generator_renders():
    page = CLI_PAGE.read_text()
    assert page == page_with_reference(page), "run `python -m scripts.cli_doc --write`"
