"""The hand-over from the MQTT thread to the pipeline, bounded in messages and payload bytes.

The broker is meant to bound what the agent holds: it may send at most `local.receive_maximum`
messages that are not yet acknowledged, and the agent acknowledges a message only after its batch
commits. mosquitto 2.0.11 (Debian 12 and Raspberry Pi OS) stops honouring that limit on a resumed
session once the first acknowledgements arrive, and sends the whole queue: measured, 3,000 of
3,000 queued messages reached a client that advertised 100 and had acknowledged 50. A backlog of
hours would then land in the agent's memory. So the inbox keeps its own bound: when it is full
the MQTT thread waits in `put` until the pipeline has taken half, stops reading the socket
meanwhile, and TCP leaves the rest at the broker.

While it waits paho sends nothing, not even keepalive pings. The pipeline frees room within
milliseconds unless storage is failing; a stall longer than 1.5 x keepalive makes the broker
close the connection, and paho reconnects once it runs again. Nothing is lost: messages of the
old connection are not acknowledged, so the broker delivers them again and their digests mark
them as copies. Letting messages in anyway to keep paho running would not help: the ping's
answer queues behind the broker's backlog, and memory would grow for as long as storage fails.

Each thread writes only its own counters (the producer what it put, the consumer what it took),
so the fill level needs no lock; each side sets the other's event only while the other waits.

The consumer never calls `SimpleQueue.get` with a timeout: in CPython 3.11 a signal that
interrupts that wait close to its deadline makes it wait forever (the remaining time goes
negative, which means no limit). The pipeline runs in the main thread, where Python handles
signals, and an agent was seen ignoring SIGTERM in that wait; `threading.Event.wait` handles the
case.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Generic, TypeVar

from agent.metrics import InboxCounts

T = TypeVar("T")
_WAKE_CHECK_S = 0.05  # a wake-up lost to a race costs at most this


class Inbox(Generic[T]):
    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._queue: queue.SimpleQueue[tuple[T, int]] = queue.SimpleQueue()
        self._put = self._put_bytes = 0  # the producer's
        self._taken = self._taken_bytes = 0  # the consumer's
        self._waiting = False  # the producer, for room
        self._room = threading.Event()
        self._consumer_waiting = False  # the consumer, for a message
        self._arrived = threading.Event()
        self._closed = False
        # A waiting producer resumes once the inbox is down to half: one wake-up per half an
        # inbox, not a hand-over of the interpreter lock per message.
        self._resume_messages = max_messages // 2
        self._resume_bytes = max_bytes // 2
        self.peak_messages = 0  # the most held at once
        self.waits = 0  # times the producer found the inbox full

    def put(self, item: T, size: int) -> None:
        """Queue `item` of `size` payload bytes; wait for room while the inbox is full."""
        if self._full() and not self._closed:
            self._wait_for_room()
        self._put += 1
        self._put_bytes += size
        held = self._put - self._taken
        if held > self.peak_messages:
            self.peak_messages = held
        self._queue.put((item, size))
        if self._consumer_waiting:  # wake it once, not for every message until it runs
            self._consumer_waiting = False
            self._arrived.set()

    def get(self, timeout: float) -> T:
        """The oldest item; queue.Empty after `timeout` seconds (at once when 0)."""
        try:
            item, size = self._queue.get_nowait()
        except queue.Empty:
            if not timeout:
                raise
            item, size = self._wait_for_item(timeout)
        self._taken += 1
        self._taken_bytes += size
        if self._waiting and not self._above(self._resume_messages, self._resume_bytes):
            self._room.set()
        return item

    def held(self) -> tuple[int, int]:
        """Messages and payload bytes waiting for the pipeline."""
        # What was taken is read first: another thread's read in between can then only make
        # the result larger, never negative.
        taken, taken_bytes = self._taken, self._taken_bytes
        return self._put - taken, self._put_bytes - taken_bytes

    def counts(self) -> InboxCounts:
        messages, size = self.held()
        return InboxCounts(messages, size, self.peak_messages, self.waits)

    def close(self) -> None:
        """Stop bounding: a producer waiting now returns (nobody will take again)."""
        self._closed = True
        self._room.set()

    def _full(self) -> bool:
        return self._above(self.max_messages - 1, self.max_bytes - 1)

    def _above(self, messages: int, size: int) -> bool:
        return self._put - self._taken > messages or self._put_bytes - self._taken_bytes > size

    def _wait_for_item(self, timeout: float) -> tuple[T, int]:
        deadline = time.monotonic() + timeout
        try:
            while True:
                # Raised before looking: a message put after the look finds it raised.
                self._consumer_waiting = True
                try:
                    return self._queue.get_nowait()
                except queue.Empty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise
                    self._arrived.wait(left)
                    self._arrived.clear()  # a set after this is for an item get_nowait sees
        finally:
            self._consumer_waiting = False

    def _wait_for_room(self) -> None:
        self.waits += 1
        self._waiting = True
        try:
            while self._above(self._resume_messages, self._resume_bytes) and not self._closed:
                self._room.wait(_WAKE_CHECK_S)
                self._room.clear()
        finally:
            self._waiting = False
