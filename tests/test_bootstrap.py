"""scripts/bootstrap.sh says what `make test`'s browser install brings before apt-get does it,
and `make demo`'s setup installs no browser (issue 17, item 5).

The script runs for real against a stand-in machine: a PATH holding only the few tools it uses,
an `apt-get` that records its calls (and answers `-s` with a plan), a mosquitto that is
"installed", no chromium, and a venv folder in tmp_path marked as already installed, so
nothing is installed and the shared venv is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from tests.conftest import ROOT

TOOLS = ("bash", "env", "dirname", "grep", "cut", "tr", "cat")
PLAN = """Inst chromium (150.0 Debian:12 [amd64])
Inst chromium-common (150.0 Debian:12 [amd64])
Inst fonts-liberation (1:2.1 Debian:12 [all])
Inst libperl5.36 [5.36.0-7] (5.36.0-7+deb12u2 Debian:12 [amd64])
"""


def _machine(tmp_path: Path) -> tuple[Path, Path]:
    """The stand-in PATH and venv."""
    bin_dir, venv = tmp_path / "bin", tmp_path / "venv"
    bin_dir.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    stubs = {
        "id": "echo 0",  # root: no sudo in the way
        "mosquitto": "exit 0",
        "apt-get": f'echo "[apt-get $*]"\ncase "$*" in *-s*) cat <<"PLAN"\n{PLAN}PLAN\n;; esac',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to("/bin/false")
    installed = venv / ".installed"
    installed.touch()
    later = (ROOT / "pyproject.toml").stat().st_mtime + 3600
    os.utime(installed, (later, later))
    return bin_dir, venv


def _bootstrap(tmp_path: Path, **env: str) -> str:
    bin_dir, venv = _machine(tmp_path)
    done = subprocess.run(
        [str(bin_dir / "bash"), str(ROOT / "scripts" / "bootstrap.sh")],
        env={"PATH": str(bin_dir), "VENV": str(venv), **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    return done.stdout


def test_the_browser_install_is_announced_before_it_happens(tmp_path: Path) -> None:
    out = _bootstrap(tmp_path, WITH_BROWSER="1")
    install = out.index("[apt-get install -y -qq chromium]")
    said = out[:install]
    assert "headless browser" in said  # why
    assert re.search(r"\b3 new package\(s\), upgrading: libperl5\.36\n", said), said  # what
    assert "make demo does not need it" in said


def test_make_demos_setup_installs_no_browser(tmp_path: Path) -> None:
    demo = re.search(r"(?m)^demo: (.*)$", (ROOT / "Makefile").read_text())
    assert demo and demo.group(1).split() == ["setup"]
    setup = re.search(r"(?ms)^setup:\n(.*?)\n\n", (ROOT / "Makefile").read_text())
    assert setup and "WITH_BROWSER" not in setup.group(1)
    assert "apt-get" not in _bootstrap(tmp_path)


def test_the_setup_installs_every_extra_the_tests_need() -> None:
    """`make test` runs the Sparkplug tests, which import protobuf: the venv gets every extra
    pyproject declares (sparkplug's protobuf would otherwise arrive only through onnxruntime)."""
    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    script = (ROOT / "scripts" / "bootstrap.sh").read_text()
    installed = re.search(r'pip install -q -e "\.\[([^\]]*)\]"', script)
    assert installed, "bootstrap.sh no longer installs the project with extras"
    assert set(installed.group(1).split(",")) == extras
