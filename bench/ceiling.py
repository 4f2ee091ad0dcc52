"""The ceiling for draining a backlog: a bare paho subscriber that only parses each message.

`python -m bench.ceiling PORT CLIENT_ID TOPIC N` resumes CLIENT_ID's persistent session, takes N
queued QoS 1 messages (paho acknowledges each as its callback returns), parses each as JSON,
and prints one line when the last one is in (the caller times it).
"""

from __future__ import annotations

import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main(port: int, client_id: str, topic: str, expected: int) -> None:
    got = [0]
    done = threading.Event()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        json.loads(msg.payload)
        got[0] += 1
        if got[0] >= expected:
            done.set()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    client.on_message = on_message
    session = Properties(PacketTypes.CONNECT)
    session.SessionExpiryInterval = 3600
    session.ReceiveMaximum = 1000
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port, clean_start=False, properties=session)
    client.loop_start()
    if not done.wait(600):
        sys.exit(f"only {got[0]} of {expected} messages arrived")
    print(json.dumps({"messages": got[0]}), flush=True)
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]))
