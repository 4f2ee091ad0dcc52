"""Fixtures of the whole-process fleet tests: a key pair and agents that trust it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.envelope import write_keypair
from testbed.mosquitto import Mosquitto
from tests.conftest import AgentProcess, launch_agent
from tests.system.pushing import GROUP


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return write_keypair(tmp_path / "keys")


@pytest.fixture
def fleet_agent(
    tmp_path: Path, model_path: Path, keys: tuple[Path, Path]
) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(
        local: Mosquitto,
        upstream: Mosquitto,
        device: str,
        health_s: float = 2,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        fleet: str = "",
    ) -> AgentProcess:
        """`fleet`: more `[fleet]` lines."""
        extra = (
            f'[fleet]\ntrusted_keys = ["{keys[1]}"]\ngroups = ["{GROUP}"]\n'
            f"health_check_s = {health_s}\nhealth_min_windows = 20\n{fleet}"
            "[forward]\nstatus_interval_s = 0.5\n"
        )
        agent = launch_agent(
            tmp_path / device, local, upstream, model_path, extra, env=env, device=device, args=args
        )
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()
