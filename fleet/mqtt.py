"""Operator-side MQTT connections: connect (and subscribe) and wait, or fail with a clear error."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import BrokerConfig
from agent.connection import make_client

SESSION_EXPIRY_S = 7 * 24 * 3600


class FleetError(RuntimeError):
    pass


def connect(
    host: str,
    port: int,
    client_id: str = "",
    clean_start: bool = True,
    subscribe: str | None = None,
    on_message: Callable[..., None] | None = None,
    timeout: float = 10.0,
    security: BrokerConfig | None = None,
) -> mqtt.Client:
    """A connected MQTT 5 client with its loop running; subscribed (QoS 1, SUBACK seen) if asked.

    Callbacks are installed before connecting: a persistent session's queued messages arrive
    right after CONNACK. The subscription is renewed on every reconnect. `security` carries a
    login and TLS settings, as in the agent's config.
    """
    if security is not None:
        client = make_client(security, client_id)
    else:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
    ready = threading.Event()
    refused: list[str] = []

    def on_connect(c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            refused.append(str(rc))
            ready.set()
        elif subscribe:
            c.subscribe(subscribe, qos=1)
        else:
            ready.set()

    client.on_connect = on_connect
    client.on_subscribe = lambda *_: ready.set()
    if on_message:
        client.on_message = on_message
    properties = None
    if not clean_start:
        # MQTT 5 ends a session at disconnect unless it is given an expiry interval.
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
    try:
        client.connect(host, port, keepalive=30, clean_start=clean_start, properties=properties)
    except ssl.SSLError as exc:
        raise FleetError(f"TLS to {host}:{port} failed: {exc.reason or exc}") from exc
    except OSError as exc:
        raise FleetError(f"cannot reach broker {host}:{port}: {exc.strerror or exc}") from exc
    client.loop_start()
    if not ready.wait(timeout) or refused:
        client.loop_stop()
        raise FleetError(f"broker {host}:{port} did not accept the connection {refused or ''}")
    return client
