"""`edge-trainer`'s entry point: the CLI, or one clear line when the `trainer` extra is missing.

A gateway installs the project without extras (`pip install .`), which still puts an
`edge-trainer` on its PATH; the CLI's modules import scikit-learn, skl2onnx and onnx at once,
so it used to end in a traceback even on `--help` (issue 17, item 2). This module imports
nothing of them: it tries the CLI, and when a module of the extra is what is missing, it says
which extra to install (exit 2), while `--version` and `--help` still answer.
"""

from __future__ import annotations

import sys

from agent.version import version_line

PROG = "edge-trainer"
# Top-level modules the `trainer` extra provides (pyproject.toml's optional-dependencies).
EXTRA_MODULES = frozenset({"sklearn", "skl2onnx", "onnx", "matplotlib", "pandas"})
INSTALL = "pip install 'edge-anomaly-agent[trainer]'"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        from trainer.cli import main as cli_main

        return cli_main(args)  # inside: `report` imports matplotlib only when it runs
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in EXTRA_MODULES:
            raise
        return _without_extra(missing, args)


def _without_extra(missing: str, args: list[str]) -> int:
    """What `edge-trainer` can still do: name itself, and say what to install."""
    lacking = f"needs the 'trainer' extra, which this install lacks (no module {missing!r})"
    if args == ["--version"]:
        print(version_line(PROG))
        return 0
    if args in (["-h"], ["--help"]):
        print(f"usage: {PROG} [-h] [--version] COMMAND ...\n")
        print("Simulate data, train anomaly detectors and export them as ONNX models.\n")
        print(f"Every command {lacking}:\n  {INSTALL}")
        return 0
    print(f"{PROG}: {lacking}: {INSTALL}", file=sys.stderr)
    return 2
