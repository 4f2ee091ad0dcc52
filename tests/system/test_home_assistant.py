"""Home Assistant discovery end to end, with a real mosquitto standing in for HA's broker: the
test reads the discovery configs as HA would, follows the topics they name, and checks what HA
would show: announced, problem on while an episode fires and off once resolved, unavailable when
the agent dies (its Last Will), removed when the asset is forgotten."""

from __future__ import annotations

import json
import re
import threading

import paho.mqtt.client as mqtt

from fleet.mqtt import connect
from fleet.replay import readings_from_csv, replay
from tests.conftest import DEVICE, run_cli, wait_for, wait_status


class HomeAssistantView:
    """What HA keeps from its broker: retained discovery configs, and each topic's last
    payload (alerts and status)."""

    def __init__(self, port: int) -> None:
        self.configs: dict[str, bytes] = {}
        self.last: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()
        self.client = connect("127.0.0.1", port, subscribe="homeassistant/#", on_message=self._on)
        self.client.subscribe(f"edge/{DEVICE}/#", qos=1)

    def _on(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            if msg.topic.startswith("homeassistant/"):
                self.configs[msg.topic] = msg.payload
            else:
                self.last.setdefault(msg.topic, []).append(msg.payload)

    def config(self, component: str, asset: str, kind: str) -> dict | None:
        payload = self.configs.get(f"homeassistant/{component}/{DEVICE}/{asset}_{kind}/config")
        return json.loads(payload) if payload else None

    def problem_states(self, config: dict) -> list[str]:
        """The binary sensor's states, as its value_template reads each alert."""
        with self.lock:
            alerts = [json.loads(p) for p in self.last.get(config["state_topic"], [])]
        return ["ON" if a["state"] == "firing" else "OFF" for a in alerts]

    def available(self, config: dict) -> bool | None:
        (availability,) = config["availability"]
        with self.lock:
            payloads = self.last.get(availability["topic"])
        if not payloads:
            return None
        state = json.loads(payloads[-1])["state"]
        return {"online": True, "offline": False}.get(state)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_home_assistant_sees_assets_alerts_and_availability(broker, start_agent, sim_data, trained):
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream, extra="[home_assistant]\n")
    wait_status(upstream.port, "online")
    ha = HomeAssistantView(upstream.port)
    readings = readings_from_csv(sim_data.live_csv)
    replay(readings, "127.0.0.1", local.port, f"edge/{DEVICE}/readings/pump-7")
    agent.wait_stored(len(readings))

    problem = wait_for(lambda: ha.config("binary_sensor", "pump-7", "problem"), 30, "announced")
    score = wait_for(lambda: ha.config("sensor", "pump-7", "score"), 30, "score announced")
    assert problem["device_class"] == "problem"
    assert score["json_attributes_topic"] == problem["state_topic"]
    wait_for(lambda: not agent.stats()["alerts_pending"], 30, "outbox drained")
    delivered = agent.stats()["alerts_delivered"]
    states = wait_for(
        lambda: len(s := ha.problem_states(problem)) == delivered and s, 30, "alerts seen"
    )
    assert "ON" in states and states[-1] == "OFF", states  # fired, and resolved at the end
    assert ha.available(problem) is True

    # A name HA does not allow in a topic level: announced under a safe, distinct object id.
    replay(readings[:3], "127.0.0.1", local.port, f"edge/{DEVICE}/readings/line.3:pump")
    odd = wait_for(
        lambda: [t for t in ha.configs if "line_3_pump_" in t and ha.configs[t]], 30, "odd name"
    )
    assert len(odd) == 2 and all(re.fullmatch(r"[\w/-]+", t) for t in odd), odd
    odd_config = json.loads(ha.configs[odd[0]])
    assert odd_config["state_topic"] == f"edge/{DEVICE}/alerts/line.3:pump"

    reset = run_cli("agent", "reset-asset", "--config", str(agent.config), "pump-7")
    assert reset.returncode == 0, reset.stderr
    wait_for(
        lambda: (
            ha.config("binary_sensor", "pump-7", "problem") is None
            and ha.config("sensor", "pump-7", "score") is None
        ),
        30,
        "both configs removed",
    )

    agent.kill()  # no clean stop: the Last Will says offline
    wait_for(lambda: ha.available(problem) is False, 60, "unavailable")
    ha.close()
