"""Home Assistant discovery payloads, checked against what HA's MQTT discovery documents:
topic `<discovery_prefix>/<component>/<node_id>/<object_id>/config` (node and object ids of
[a-zA-Z0-9_-]), a `unique_id`, a `device` with `identifiers`, the state topic with a
`value_template`, availability with payloads; and announce / remove in step with the assets."""

from __future__ import annotations

import json
import re

import pytest

from agent.config import AgentConfig, HomeAssistantConfig
from agent.homeassistant import Discovery, announcements, object_id, topics_for

LEVEL = re.compile(r"^[A-Za-z0-9_-]+$")


def config(**ha: object) -> tuple[AgentConfig, HomeAssistantConfig]:
    agent = AgentConfig.model_validate(
        {
            "device": {"id": "gw.1"},
            "upstream": {},
            "model": {"path": "m.onnx"},
            "storage": {"data_dir": "d"},
            "ingest": {"max_assets": 3},
            "home_assistant": ha,
        }
    )
    assert agent.home_assistant is not None
    return agent, agent.home_assistant


def test_payloads_have_the_documented_keys() -> None:
    agent, ha = config()
    (problem_topic, problem), (score_topic, score) = announcements(
        topics_for(agent, ha), "gw.1", "pump-7"
    )
    for topic, component in ((problem_topic, "binary_sensor"), (score_topic, "sensor")):
        prefix, comp, node, obj, tail = topic.split("/")
        assert (prefix, comp, tail) == ("homeassistant", component, "config")
        assert LEVEL.match(node) and LEVEL.match(obj)
    assert problem["device_class"] == "problem"
    assert problem["state_topic"] == score["state_topic"] == "edge/gw.1/alerts/pump-7"
    assert score["json_attributes_topic"] == "edge/gw.1/alerts/pump-7"
    assert problem["unique_id"] != score["unique_id"]
    assert problem["device"] == score["device"] and problem["device"]["identifiers"]
    (availability,) = problem["availability"]
    assert availability == {
        "topic": "edge/gw.1/status",
        "value_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    for payload in (problem, score):  # HA rejects a config with a key it does not know
        assert set(payload) <= DOCUMENTED


# The keys HA documents for MQTT binary sensors and sensors that these payloads use.
DOCUMENTED = {
    "name",
    "unique_id",
    "state_topic",
    "value_template",
    "availability",
    "device",
    "origin",
    "qos",
    "device_class",
    "payload_on",
    "payload_off",
    "state_class",
    "json_attributes_topic",
    "json_attributes_template",
}


def _render(template: str, alert: dict) -> str:
    """The templates as HA's Jinja renders them (`value_json` is the payload, `tojson` a
    filter)."""
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment()
    env.filters["tojson"] = json.dumps
    return env.from_string(template).render(value_json=alert)


@pytest.mark.parametrize(("state", "shown"), [("firing", "ON"), ("resolved", "OFF")])
def test_templates_read_an_alert(state: str, shown: str) -> None:
    agent, ha = config()
    (_, problem), (_, score) = announcements(topics_for(agent, ha), "gw.1", "pump-7")
    alert = {
        "state": state,
        "score": 0.93,
        "level": "critical",
        "top_sensors": [{"sensor": "pressure", "contribution": 0.9}],
        "episode_start": "2026-01-01T00:00:00Z",
        "message": "pump-7: critical",
    }
    assert _render(problem["value_template"], alert) == shown
    assert _render(score["value_template"], alert) == "0.93"
    attributes = json.loads(_render(score["json_attributes_template"], alert))
    assert attributes["top_sensors"] == alert["top_sensors"]


@pytest.mark.parametrize("name", ["a.b", "a:b", "pump-1.2:3", "x" * 64])
def test_hostile_names_become_safe_distinct_levels(name: str) -> None:
    safe = object_id(name)
    assert LEVEL.match(safe)
    assert safe != object_id(name.replace(".", "_").replace(":", "_")) or safe == name


def test_no_two_gateway_assets_share_an_id() -> None:
    """HA keys entities and devices by `unique_id` and `identifiers` across all gateways: with
    `_` between them, gateway gw_1's asset pump and gateway gw's asset 1_pump were one."""
    agent, ha = config()
    ids = set()
    for device, asset in (("gw_1", "pump"), ("gw", "1_pump"), ("gw.1", "pump"), ("gw", "1.pump")):
        for _, payload in announcements(topics_for(agent, ha), device, asset):
            ids.add(payload["unique_id"])
            ids.add(tuple(payload["device"]["identifiers"]))
    assert len(ids) == 4 * 3  # two entities and one device each


def test_announce_remove_and_resend_after_reconnect() -> None:
    agent, ha = config(discovery_prefix="ha", node_id="line-3")
    sent: list[tuple[str, bytes]] = []
    up = [True]

    def publish(topic: str, payload: bytes) -> bool:
        if up[0]:
            sent.append((topic, payload))
        return up[0]

    discovery = Discovery(agent, ha, publish)
    discovery.sync(["pump-1"])
    assert [t for t, _ in sent] == [
        "ha/binary_sensor/line-3/pump-1_problem/config",
        "ha/sensor/line-3/pump-1_score/config",
    ]
    sent.clear()
    discovery.sync(["pump-1"])
    assert sent == []  # already announced
    up[0] = False
    discovery.sync([])  # forgotten while disconnected: the removal waits
    up[0] = True
    discovery.reconnected()
    discovery.sync([])
    assert sent == [
        ("ha/binary_sensor/line-3/pump-1_problem/config", b""),
        ("ha/sensor/line-3/pump-1_score/config", b""),
    ]
    sent.clear()
    discovery.sync(["pump-2"])
    discovery.reconnected()
    discovery.sync(["pump-2"])
    assert len(sent) == 4  # announced again on the new connection


def test_removals_waiting_are_bounded() -> None:
    """Made-up assets come and go while removals cannot be sent (a broker that takes the
    configs but refuses the empty ones): what waits stays within ingest.max_assets."""
    agent, ha = config()
    discovery = Discovery(agent, ha, lambda _topic, payload: bool(payload))
    for n in range(50):
        discovery.sync([f"a{n}"])
    assert len(discovery.removing) == agent.ingest.max_assets
