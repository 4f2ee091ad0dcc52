"""A fleet on one broker: how long a signed group push takes to reach every agent.

The agents are real `edge-agent run` processes, each with its own data dir, all in one group
and all trusting one key; the push is published once, retained, on the group's topic, as the
operator's `edge-fleet push-config` does. Timed from the publish to each agent's retained
status reporting the new version switched to (`checking`) and then healthy (`applied`).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from agent.config import BrokerConfig
from agent.envelope import write_keypair
from bench.harness import Models, agent_run, brokers, wait_until
from fleet.mqtt import connect
from fleet.push import publish_push

GROUP = "bench"
VERSION = 1


def group_push(models: Models, folder: Path, agents: int) -> dict[str, float]:
    local, upstream = brokers(folder)
    private, public = write_keypair(folder / "keys")
    extra = (
        f'[fleet]\ntrusted_keys = ["{public}"]\ngroups = ["{GROUP}"]\nhealth_check_s = 1\n'
        "[forward]\nstatus_interval_s = 1\n"
    )
    seen: dict[str, dict[str, float]] = {}
    lock = threading.Lock()
    pushed_at = [0.0]

    def on_status(_c: object, _u: object, msg: object) -> None:
        doc = json.loads(msg.payload)
        push = doc.get("last_push") or {}
        if doc.get("state") != "online":
            return
        with lock:
            entry = seen.setdefault(doc["device_id"], {})
            if push.get("version") == VERSION and pushed_at[0]:
                entry.setdefault(push["status"], time.perf_counter() - pushed_at[0])

    watcher = connect("127.0.0.1", upstream.port, subscribe="edge/+/status", on_message=on_status)
    fleet = [
        agent_run(
            folder / f"gw-{n:03d}",
            local,
            upstream,
            models.paths["pca"],
            extra,
            device=f"gw-{n:03d}",
        )
        for n in range(agents)
    ]
    try:
        for agent in fleet:
            agent.start()
        wait_until(lambda: len(seen) == agents, 300, f"{agents} agents online", poll=0.1)
        pushed_at[0] = time.perf_counter()
        publish_push(
            BrokerConfig(port=upstream.port),
            "edge",
            f"group:{GROUP}",
            "config",
            b"[alerts]\nfire_after = 4\n",
            private,
            VERSION,
        )

        def count(status: str) -> int:
            with lock:
                return sum(status in entry for entry in seen.values())

        wait_until(lambda: count("applied") == agents, 300, f"{agents} applied", poll=0.05)
        with lock:
            switched = sorted(e["checking"] for e in seen.values() if "checking" in e)
            applied = sorted(e["applied"] for e in seen.values())
    finally:
        watcher.disconnect()
        watcher.loop_stop()
        for agent in fleet:
            agent.stop(timeout=60)
        local.stop()
        upstream.stop()
    return {
        "agents": agents,
        "switched_median_s": switched[len(switched) // 2] if switched else float("nan"),
        "switched_all_s": switched[-1] if switched else float("nan"),
        "applied_all_s": applied[-1],
        "health_check_s": 1.0,
    }
