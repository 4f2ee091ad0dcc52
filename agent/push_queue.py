"""The hand-over of fleet messages from the upstream connection's thread to the main loop.

Anyone who can publish on the upstream broker can publish on a device's push topics, signed or
not (issue #13: 20,000 unsigned messages grew an unbounded queue to 294 MiB). So the queue is
bounded in messages and bytes, and a message that finds it full is dropped and counted rather
than waited for: the same thread carries the acknowledgements of the alerts going upstream.
Pushes are retained, so the main loop can ask the broker for them again once the queue has room.
"""

from __future__ import annotations

import threading
from collections import deque


class PushQueue:
    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: deque[tuple[str, bytes]] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self.dropped = 0  # messages refused because the queue was full, since the start

    def put(self, topic: str, payload: bytes) -> bool:
        """Queue the message; False (and counted) when it does not fit."""
        with self._lock:
            if len(self._items) >= self.max_messages or self._bytes + len(payload) > self.max_bytes:
                self.dropped += 1
                return False
            self._items.append((topic, payload))
            self._bytes += len(payload)
            return True

    def get(self) -> tuple[str, bytes] | None:
        """The oldest message, or None when there is none."""
        with self._lock:
            if not self._items:
                return None
            topic, payload = self._items.popleft()
            self._bytes -= len(payload)
            return topic, payload

    def __len__(self) -> int:
        return len(self._items)
