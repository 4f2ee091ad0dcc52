"""Sending signed pushes with the real `edge-fleet` CLI and waiting for a device's verdict."""

from __future__ import annotations

import json
from pathlib import Path

from testbed.mosquitto import Mosquitto
from tests.conftest import run_cli, wait_status

GROUP = "line-1"  # the group every fleet_agent belongs to


def push_cli(upstream: Mosquitto, kind: str, file: Path, key: Path, *target: str, **opts):
    args = ["fleet", f"push-{kind}", str(file), "--broker", upstream.address, "--key", str(key)]
    args += list(target)
    for name, value in opts.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def last_push(
    upstream: Mosquitto, device: str, status: str, version: int | None = None, reason: str = ""
) -> dict:
    """The device's status once its last push has this status (version, reason)."""

    def matches(s: dict) -> bool:
        push = s.get("last_push") or {}
        return (
            push.get("status") == status
            and (version is None or push["version"] == version)
            and reason in push.get("reason", "")
        )

    return wait_status(upstream.port, "online", device=device, where=matches)
