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

# The model contract (agent/model/: manifest, scorer, table reading, offline scoring) is open to
# every package below; its docstring says what is in it.
CONTRACT = "agent.model"

# What else of agent a package may import, each with the reason it may.
EXCEPTIONS: dict[str, dict[str, str]] = {
    "trainer": {
        "agent.atomic": "a model or report replaces its file whole (fsync, rename)",
        "agent.logs": "edge-trainer logs to stderr in the agent's key=value / JSON line format",
        "agent.jsontext": "printed JSON is strict: a metric with no value is null, not NaN",
        "agent.version": "--version prints the one package version, as edge-agent's does",
    },
    "fleet": {
        "agent.config": "--broker settings, TLS and logins are checked by the agent's own schema",
        "agent.connection": "one MQTT client setup (TLS, logins, MQTT 5) for agent and operator",
        "agent.envelope": "the signed push envelope: edge-fleet seals what the agent verifies",
        "agent.sparkplug.edge": "edge-fleet replay --sparkplug: Sparkplug B as the agent reads it",
        "agent.jsontext": "printed JSON is strict: a metric with no value is null, not NaN",
        "agent.version": "--version prints the one package version, as edge-agent's does",
    },
    "bench": {
        "agent.config": "bench/fleet.py gives fleet.push its BrokerConfig, as edge-fleet does",
        "agent.envelope": "bench/fleet.py makes the operator's signing key as edge-fleet does",
        "agent.sparkplug.decoder": "bench/sparkplug.py times the Sparkplug B decoder alone",
        "agent.sparkplug.edge": "bench/sparkplug.py sends the agent a Sparkplug B edge node's data",
    },
    "demo": {},
    "testbed": {
        "agent.readings": "counts the readings a running agent stored, in the store's own format",
        "agent.store": "reads a running agent's stats from its database, as `edge-agent buffer`",
    },
}

# What the contract itself may import from the rest of agent: importing agent.model must not
# pull the agent's internals into the trainer or the fleet.
CONTRACT_DEPENDS = {
    "agent.window": "offline scoring windows rows with the live stage, so scores cannot drift",
}


def in_contract(module: str) -> bool:
    return module == CONTRACT or module.startswith(CONTRACT + ".")


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


def test_other_packages_import_only_the_model_contract_and_their_exceptions() -> None:
    for package, allowed in EXCEPTIONS.items():
        used = package_imports(package)
        extra = {
            module: sorted(files)
            for module, files in used.items()
            if not in_contract(module) and module not in allowed
        }
        assert not extra, f"{package}/ imports agent modules outside agent.model: {extra}"
        stale = set(allowed) - set(used)
        assert not stale, f"{package}/ no longer imports {sorted(stale)}: drop the exception"


def test_the_model_contract_depends_only_on_what_it_declares() -> None:
    used = package_imports("agent/model")
    outside = {m: sorted(files) for m, files in used.items() if not in_contract(m)}
    assert set(outside) <= set(CONTRACT_DEPENDS), f"agent/model imports {outside}"
    stale = set(CONTRACT_DEPENDS) - set(outside)
    assert not stale, f"agent/model no longer imports {sorted(stale)}: drop it"


def agent_graph() -> dict[str, set[str]]:
    """Each agent module and the agent modules it imports (a package by its `__init__`)."""
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (ROOT / "agent").rglob("*.py")
    }
    return {
        module: {m for m in agent_imports(path) if m in modules and m != module}
        for module, path in modules.items()
    }


def import_circle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports in `graph` (its modules in order), or [] if there is none."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        for imported in sorted(graph[module]):
            if circle := visit(imported, [*path, module]):
                return circle
        done.add(module)
        return []

    for module in sorted(graph):
        if circle := visit(module, []):
            return circle
    return []


def test_the_circle_finder_finds_a_circle_and_only_one() -> None:
    assert import_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert import_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_agent_modules_import_no_circle() -> None:
    """Issue 14 item 3: cli and signals imported each other; a circle hides which one loads
    first (the entry point must install the signal handlers before anything heavy)."""
    circle = import_circle(agent_graph())
    assert not circle, "agent modules import in a circle: " + " -> ".join(circle)


def test_the_entry_point_imports_only_the_signal_handlers_before_installing_them() -> None:
    main = ROOT / "agent/__main__.py"
    at_top = [
        ast.unparse(node)
        for node in ast.parse(main.read_text()).body
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    expected = ["from __future__ import annotations", "import sys", "from agent import signals"]
    assert at_top == expected
    assert agent_imports(main) == {"agent.signals", "agent.cli"}, "the CLI comes after, in main()"
    assert agent_imports(ROOT / "agent/signals.py") == set()
