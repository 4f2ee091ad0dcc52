"""The inbox between the MQTT thread and the pipeline: a full inbox makes the producer wait until
the consumer has taken half, in messages and in bytes; closing releases a waiting producer. Real
threads, waits on conditions."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading

import pytest

from agent.inbox import Inbox
from tests.conftest import wait_for


def _put_in_thread(inbox: Inbox[str], items: list[tuple[str, int]]) -> threading.Thread:
    thread = threading.Thread(target=lambda: [inbox.put(i, n) for i, n in items], daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("max_messages", "max_bytes", "sizes"),
    [(4, 10**6, [1, 1, 1, 1, 1]), (100, 8, [2, 2, 2, 2, 1])],
    ids=["messages", "bytes"],
)
def test_a_full_inbox_holds_the_producer_until_the_consumer_takes_half(
    max_messages, max_bytes, sizes
):
    inbox: Inbox[str] = Inbox(max_messages, max_bytes)
    producer = _put_in_thread(inbox, [(f"m{i}", n) for i, n in enumerate(sizes)])
    wait_for(lambda: inbox.counts().full == 1, 10, "the producer to find the inbox full")
    assert inbox.held() == (4, sum(sizes[:4])), "the fifth message waits for room"

    assert inbox.get(0) == "m0"
    assert producer.is_alive(), "three quarters full: still waiting"
    assert inbox.get(0) == "m1"
    producer.join(timeout=10)
    assert not producer.is_alive(), "half full: the producer goes on"
    assert [inbox.get(0) for _ in range(3)] == ["m2", "m3", "m4"], "nothing lost, in order"
    counts = inbox.counts()
    assert (counts.messages, counts.bytes, counts.peak_messages, counts.full) == (0, 0, 4, 1)
    with pytest.raises(queue.Empty):
        inbox.get(0)


def test_closing_releases_a_waiting_producer_and_lifts_the_bound():
    inbox: Inbox[str] = Inbox(max_messages=1, max_bytes=10**6)
    inbox.put("first", 1)
    producer = _put_in_thread(inbox, [("second", 1), ("third", 1)])
    wait_for(lambda: inbox.counts().full == 1, 10, "the producer to wait")
    inbox.close()
    producer.join(timeout=10)
    assert not producer.is_alive()
    assert inbox.held() == (3, 3), "closed, it holds whatever comes"


def test_get_waits_for_a_message_up_to_its_timeout_and_wakes_when_one_comes():
    inbox: Inbox[str] = Inbox(max_messages=10, max_bytes=10**6)
    with pytest.raises(queue.Empty):
        inbox.get(0.01)
    got: list[str] = []
    consumer = threading.Thread(target=lambda: got.append(inbox.get(600)), daemon=True)
    consumer.start()
    # Put only once the consumer waits, so the put has to wake it (without the wake-up it would
    # find the message only at its 600 s deadline).
    wait_for(lambda: inbox._consumer_waiting, 10, "the consumer to wait")
    inbox.put("late", 1)
    consumer.join(timeout=30)
    assert not consumer.is_alive() and got == ["late"]


_SIGNALLED_GETS = """
import queue, signal, threading
from agent.inbox import Inbox
inbox = Inbox(max_messages=10, max_bytes=10**6)
signal.signal(signal.SIGALRM, lambda *_: None)
signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
threading.Thread(target=lambda: [sum(range(2000)) for _ in iter(int, 1)], daemon=True).start()
for _ in range(200):
    try:
        inbox.get(0.002)
    except queue.Empty:
        pass
signal.setitimer(signal.ITIMER_REAL, 0)
print("done")
"""


def test_get_in_the_main_thread_returns_when_signals_interrupt_its_wait():
    """A signal every 0.3 ms and another thread holding the interpreter lock: the case where
    `SimpleQueue.get(timeout=...)` in CPython 3.11 never returns (an agent ignored SIGTERM so).
    200 gets of 2 ms take about a second; a hang is the failure."""
    done = subprocess.run(
        [sys.executable, "-c", _SIGNALLED_GETS], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
