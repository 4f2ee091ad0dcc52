"""The project's version, for `--version` on all three commands.

An installed distribution knows its version (importlib.metadata). A checkout run without
installing (`python -m agent` with the repository on the path) has only pyproject.toml, so the
version is read from there; anything else says plainly that it is unknown rather than failing
a `--version`.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "edge-anomaly-agent"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def package_version() -> str:
    """The checkout's pyproject.toml when this code runs from a checkout (an editable install
    of another checkout would otherwise answer for it), else the installed distribution's."""
    checkout = _checkout_version()
    if checkout is not None:
        return checkout
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed, and no pyproject.toml beside the code)"


def _checkout_version() -> str | None:
    try:
        project = tomllib.loads(PYPROJECT.read_text())["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return None
    if project.get("name") != DISTRIBUTION:
        return None
    version = project.get("version")
    return version if isinstance(version, str) else None


def version_line(prog: str) -> str:
    """What `PROG --version` prints: `edge-agent 0.1.0`."""
    return f"{prog} {package_version()}"
