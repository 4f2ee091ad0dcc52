"""The chaos no-loss tests' shared moves: the disturbances and the wait for a settled agent
(tests/system/test_no_loss.py for our own JSON, test_no_loss_sources.py for the sources)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from fleet.alerts import AlertSubscriber
from testbed.mosquitto import Mosquitto
from tests.conftest import AgentProcess, wait_for


def disturb(
    events: list[str],
    rng: random.Random,
    agent: AgentProcess,
    restart: Callable[[], AgentProcess],
    local: Mosquitto,
    upstream: Mosquitto,
) -> AgentProcess:
    """Each event at a random point of a running replay (nothing waits on the replay): `kill`
    (kill -9, then `restart`), `restart upstream`, or a restart of the local broker under a
    connected agent. Returns the agent running at the end."""
    for event in events:
        time.sleep(rng.uniform(0.2, 0.8))
        if event == "kill":
            agent.kill()
            agent = restart()
        elif event == "restart upstream":
            upstream.stop()
            upstream.start()
        else:
            # mosquitto 2.0 restores a queue for an absent client out of order (docs/storage.md,
            # "Order"), so the local broker restarts under a connected agent.
            agent.wait_logged("subscribed topic")
            connections = agent.logged("local connected")
            local.stop()
            local.start()
            agent.wait_logged("local connected", connections + 1)
    return agent


def settle(agent: AgentProcess, subscriber: AlertSubscriber, messages: int) -> None:
    """Wait until every message is applied and every alert is delivered and received."""
    wait_for(
        lambda: (s := agent.stats()) and s["readings"] + s["dead_letters"] >= messages,
        120,
        f"{messages} messages applied ({agent.stats()}); agent log {agent.log}",
    )
    wait_for(lambda: agent.stats()["alerts_pending"] == 0, 60, f"outbox drained; {agent.log}")
    delivered = agent.stats()["alerts_delivered"]
    assert subscriber.wait_until(lambda alerts: len(alerts) >= delivered, 60), (
        f"{len(subscriber.alerts)} of {delivered} alerts arrived upstream"
    )
