"""`edge-trainer` without the `trainer` extra, in the quick loop: the extra's modules are hidden
from a real `edge-trainer` process by an import hook (tests/test_install.py does the same on a
real gateway install, which needs the package index)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from trainer.entry import EXTRA_MODULES, INSTALL

# Runs `edge-trainer ARGS` with every module of the extra unimportable, as on a gateway.
HIDDEN = """
import sys
from importlib.abc import MetaPathFinder

class Hide(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in {hidden!r} or name.partition(".")[0] in {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Hide())
from trainer.entry import main
sys.exit(main(sys.argv[1:]))
"""


def _trainer_without_extra(
    *args: str, hidden: frozenset[str] = EXTRA_MODULES
) -> subprocess.CompletedProcess[str]:
    code = HIDDEN.format(hidden=set(hidden))
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


@pytest.mark.parametrize(
    "args", [["train", "data.csv", "--out", "m.onnx"], ["simulate", "--out", "x.csv"], []]
)
def test_a_command_says_which_extra_to_install(args: list[str]) -> None:
    done = _trainer_without_extra(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and INSTALL in done.stderr, done.stderr


def test_help_and_version_still_answer() -> None:
    helped = _trainer_without_extra("--help")
    assert helped.returncode == 0 and INSTALL in helped.stdout, helped.stderr
    version = _trainer_without_extra("--version")
    assert version.returncode == 0 and version.stdout.startswith("edge-trainer "), version.stderr


def test_another_missing_module_is_not_blamed_on_the_extra() -> None:
    """Only the extra's modules get the hint; any other import error keeps its traceback."""
    done = _trainer_without_extra("--help", hidden=frozenset({"trainer.simulate"}))
    assert done.returncode == 1 and "Traceback" in done.stderr and INSTALL not in done.stderr
