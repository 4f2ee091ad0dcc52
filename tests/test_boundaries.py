"""Which agent modules the other packages import (issue 14, item 4).

`agent/` runs on the gateway and is also the library the trainer, fleet, bench and demo share.
This test reads their source with `ast` (nothing is imported, so a package's own dependencies
need not be installed) and compares what each imports from `agent` with what it is allowed to.
An entry that is no longer used fails too, so the list stays what the code does.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

# Today's imports, recorded before the model contract is split out; to be narrowed.
ALLOWED: dict[str, set[str]] = {
    "trainer": {
        "agent.atomic",
        "agent.logs",
        "agent.model.manifest",
        "agent.model.offline",
        "agent.model.score",
        "agent.model.table",
    },
    "fleet": {
        "agent.config",
        "agent.connection",
        "agent.envelope",
        "agent.model.manifest",
        "agent.model.table",
    },
    "bench": {
        "agent.config",
        "agent.envelope",
        "agent.readings",
        "agent.model.score",
        "agent.model.table",
    },
    "demo": {"agent.store"},
}


def agent_imports(path: Path) -> set[str]:
    """The `agent` modules one file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "agent":  # `from agent import model` imports agent.model
                found.update(f"agent.{a.name}" for a in node.names)
            else:
                found.add(node.module)
    return {name for name in found if name == "agent" or name.startswith("agent.")}


def package_imports(package: str) -> dict[str, set[str]]:
    """Each agent module the package imports, with the files (relative to the root) that do."""
    users: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for module in agent_imports(path):
            users.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return users


def test_the_parser_sees_every_form_of_import(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "import agent.window\n"
        "from agent.store import Store\n"
        "from agent import cli\n"
        "from . import agent\n"
        "import agentless\n"
        "def later():\n"
        "    from agent.config import AgentConfig\n"
    )
    expected = {"agent.window", "agent.store", "agent.cli", "agent.config"}
    assert agent_imports(source) == expected


def test_other_packages_import_only_what_they_are_allowed_from_agent() -> None:
    for package, allowed in ALLOWED.items():
        used = package_imports(package)
        extra = {module: sorted(files) for module, files in used.items() if module not in allowed}
        assert not extra, f"{package}/ imports agent modules it may not: {extra}"
        stale = allowed - set(used)
        assert not stale, f"{package}/ no longer imports {sorted(stale)}: drop them from ALLOWED"
