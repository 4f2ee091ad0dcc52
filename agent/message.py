"""A message from the local broker, as the source hands it to the pipeline."""

from __future__ import annotations

import hashlib
from typing import NamedTuple


class Message(NamedTuple):
    topic: str
    payload: bytes
    received_at: float
    mid: int
    dup: bool  # the broker is redelivering it
    connection: int  # which local connection delivered it: its mid means nothing on another
    # Its readings may take their time from its receipt (a source's timestamps policy): then
    # two messages of the same bytes are two readings, and the digest holds the packet id,
    # which the broker keeps when it redelivers (MQTT 5, 4.4).
    by_receipt: bool = False
    # A further copy the broker sent because the topic matches another of our subscriptions
    # too (mosquitto sends one per match): acknowledged with its batch, never applied.
    extra: bool = False

    @property
    def digest(self) -> bytes:
        key = self.topic.encode() + b"\0" + self.payload
        if self.by_receipt:
            key += b"\0" + self.mid.to_bytes(2, "big")
        return hashlib.blake2b(key, digest_size=16).digest()
