"""The agent never imports scikit-learn, skl2onnx, onnx, pickle-based loaders, or the trainer,
and never evaluates code or runs a shell."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from tests.conftest import ROOT

# Never loaded in the agent's process. (The stdlib `pickle` module is: numpy imports it for
# np.load; the static check below makes sure the agent's own code never does.)
NEVER_LOADED = ("sklearn", "skl2onnx", "onnx", "joblib", "trainer", "cloudpickle")
FORBIDDEN = (*NEVER_LOADED, "pickle", "marshal", "shelve", "subprocess", "pty")


def test_running_agent_modules_load_nothing_forbidden():
    code = (
        "import sys, json, agent.cli, agent.runtime, agent.model.offline;"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    loaded = set(json.loads(out.stdout))
    assert not loaded & set(NEVER_LOADED), loaded & set(NEVER_LOADED)
    assert "onnxruntime" in loaded
    # 8 MiB, loaded only by an agent that takes fleet pushes.
    assert "cryptography" not in loaded


def test_agent_source_imports_nothing_forbidden():
    for path in (ROOT / "agent").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


# Builtins that run code given as data, and os functions that run programs.
NEVER_CALLED = {"eval", "exec", "compile", "__import__"}
NEVER_CALLED_IN_OS = {"system", "popen", "execv", "execvp", "execve", "execl", "execlp", "spawnv"}


def test_agent_source_never_evaluates_code_or_runs_a_shell():
    for path in (ROOT / "agent").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func, where = node.func, f"{path.name}:{node.lineno}"
            if isinstance(func, ast.Name):
                assert func.id not in NEVER_CALLED, f"{where} calls {func.id}"
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                owner, name = func.value.id, func.attr
                assert not (owner == "os" and name in NEVER_CALLED_IN_OS), f"{where} os.{name}"
                # numpy's loader can unpickle object arrays.
                assert not (owner in {"np", "numpy"} and name == "load"), f"{where} np.load"
