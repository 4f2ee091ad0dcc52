"""The commands the README and the getting-started pages show run as shown (issue 17, item 3).

Each page's ```sh blocks (bash -euo pipefail) and ```python blocks run in order, in one copy
of this checkout (as a fresh clone of it would be), with the venv running the tests as its
`.venv` and its `bin` on PATH. A block marked on the line above it with
`<!-- doc-test: skip: REASON -->` is not run (the reason is on the page for everyone to read);
`<!-- doc-test: needs ../shared/data -->` runs only where that folder is beside the
repository. Afterwards `git status` in the copy must be clean: what the commands write is
ignored, not left for a newcomer to commit (item 6). And the JSON they print is strict JSON
(NaN is not: item 3).

The Python examples of every page are also checked for what they import (item 7): only the
standard library, the project and what the base install and the `trainer` extra bring.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from tests.checkout import copy_checkout
from tests.conftest import ROOT

PAGES = ["README.md", "docs/getting-started.md", "docs/training.md"]
FENCE = re.compile(
    r"(?ms)^(?:<!-- doc-test: (?P<mark>[^\n]*?) -->\n)?```(?P<lang>sh|python)\n(?P<body>.*?)^```$"
)
NEEDS_SHARED = "needs ../shared/data"


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    mark: str  # "" to run, "skip: why" or NEEDS_SHARED


def blocks(page: str, lang: str | None = None) -> list[Block]:
    """The page's sh and python blocks in order (only those of `lang` if given)."""
    text = (ROOT / page).read_text()
    found = [Block(m["lang"], m["body"], m["mark"] or "") for m in FENCE.finditer(text)]
    bad = [
        b.mark
        for b in found
        if b.mark and not (b.mark.startswith("skip: ") or b.mark == NEEDS_SHARED)
    ]
    assert not bad, f"{page}: unknown doc-test marks {bad}"
    return [b for b in found if lang in (None, b.lang)]


def _snapshot(repo: Path) -> None:
    """Make the copy a repository of its own, everything committed, to ask git what is new."""
    git = ["git", "-c", "user.name=doc-test", "-c", "user.email=doc-test@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, timeout=60)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True, timeout=60)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=repo, check=True, timeout=60)


def _strict_json_lines(stdout: str) -> None:
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    for line in stdout.splitlines():
        if line.startswith("{"):
            json.loads(line, parse_constant=refuse)


@pytest.mark.parametrize("page", PAGES)
def test_the_pages_commands_run_as_shown(page: str, tmp_path: Path) -> None:
    runnable = blocks(page)
    assert any(not b.mark for b in runnable if b.lang == "sh"), f"{page}: no command is tested"
    repo = copy_checkout(tmp_path / "repo")
    _snapshot(repo)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (tmp_path / "shared").symlink_to(shared)
    (repo / ".venv").symlink_to(sys.prefix)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(repo),  # the copy's code, not the venv's editable install's
    }
    for block in runnable:
        if block.mark.startswith("skip: "):
            continue
        if block.mark == NEEDS_SHARED and not (shared / "data").is_dir():
            continue
        command = {"sh": ["bash", "-euo", "pipefail", "-c"], "python": [sys.executable, "-c"]}
        done = subprocess.run(
            [*command[block.lang], block.body],
            cwd=repo, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, f"{page}:\n{block.body}\n{done.stderr[-3000:]}"
        _strict_json_lines(done.stdout)
    left = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=repo, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert left == "", f"{page}'s commands left files that git does not ignore:\n{left}"


def _allowed_modules() -> set[str]:
    """Top-level modules a workstation install (`pip install '.[trainer]'`) provides."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["trainer"]]
    dists = {
        re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-") for req in wanted
    }
    provided = {
        module
        for module, names in metadata.packages_distributions().items()
        if any(n.lower().replace("_", "-") in dists for n in names)
    }
    return provided | set(sys.stdlib_module_names) | {"agent", "trainer", "fleet"}


def _imports(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name.partition(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.partition(".")[0])
    return found


@pytest.mark.parametrize(
    "page", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
)
def test_python_examples_import_only_what_the_trainer_install_brings(page: str) -> None:
    allowed = _allowed_modules()
    for block in blocks(page, "python"):
        missing = _imports(block.body) - allowed
        assert not missing, (
            f"{page}: an example imports {sorted(missing)}, "
            "which `pip install '.[trainer]'` does not install"
        )
