"""The shipped gateway mosquitto config: real mosquitto accepts it, and it keeps what the
default config drops for an agent that is away."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from demo.mosquitto import Mosquitto
from fleet.mqtt import connect
from fleet.replay import publish_payloads
from tests.conftest import ROOT, wait_for

SHIPPED = ROOT / "mosquitto" / "edge-gateway.conf"
MESSAGES = 3000


def _settings() -> list[str]:
    lines = [line.split("#")[0].strip() for line in SHIPPED.read_text().splitlines()]
    return [line for line in lines if line]


def _tuning() -> tuple[str, ...]:
    """The shipped settings except the listener, which tests move to a free port."""
    return tuple(s for s in _settings() if s.split()[0] not in {"listener", "allow_anonymous"})


def test_the_shipped_config_listens_on_loopback_only_and_mosquitto_accepts_it(tmp_path: Path):
    listeners = [s for s in _settings() if s.startswith("listener")]
    assert listeners == ["listener 1883 127.0.0.1"]
    broker = Mosquitto(tmp_path, persistence=True, tuning=_tuning()).start()
    try:
        connect("127.0.0.1", broker.port).disconnect()
    finally:
        broker.stop()
    assert "Error" not in (tmp_path / "mosquitto.log").read_text()


def _received_after_absence(broker: Mosquitto) -> int:
    """QoS 1 messages a persistent subscriber gets after being away while they were sent."""
    got: list[bytes] = []
    lock = threading.Lock()

    def on_message(_c: object, _u: object, msg: object) -> None:
        with lock:
            got.append(msg.payload)

    away = connect("127.0.0.1", broker.port, "agent", clean_start=False, subscribe="r/#")
    away.disconnect()
    away.loop_stop()
    publish_payloads([str(i) for i in range(MESSAGES)], "127.0.0.1", broker.port, "r/pump-1")
    back = connect(
        "127.0.0.1", broker.port, "agent", clean_start=False, subscribe="r/#", on_message=on_message
    )
    try:
        # What the broker kept is sent right after CONNACK: all of it, or it stops short.
        wait_for(lambda: len(got) >= 1000, 30, "the queued messages")
        _wait_quiet(lambda: len(got), quiet_s=0.5, timeout=30)
    finally:
        back.disconnect()
        back.loop_stop()
    return len(got)


def _wait_quiet(count: Callable[[], int], quiet_s: float, timeout: float) -> None:
    """Until `count` has not changed for `quiet_s`: the only way to see a stream has ended
    when its end is what is being measured."""
    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
    raise AssertionError(f"still receiving after {timeout}s")


def test_the_default_config_drops_queued_readings_and_the_shipped_one_keeps_them(tmp_path: Path):
    default = Mosquitto(tmp_path / "default", tuning=()).start()
    try:
        kept_by_default = _received_after_absence(default)
    finally:
        default.stop()
    shipped = Mosquitto(tmp_path / "shipped", persistence=True, tuning=_tuning()).start()
    try:
        kept_by_shipped = _received_after_absence(shipped)
    finally:
        shipped.stop()
    assert kept_by_default < MESSAGES, "mosquitto's default queue limit drops messages"
    assert kept_by_shipped == MESSAGES
