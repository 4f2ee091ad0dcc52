"""The queue of fleet messages between the upstream connection and the main loop is bounded."""

from __future__ import annotations

from agent.push_queue import PushQueue


def test_a_full_queue_drops_and_counts_and_takes_again_once_emptied():
    q = PushQueue(max_messages=3, max_bytes=100)
    assert q.put("a", b"x" * 60) and q.put("b", b"x" * 40)
    assert not q.put("c", b"x"), "over the byte bound"
    assert q.get() == ("a", b"x" * 60)
    assert q.put("c", b"x") and q.put("d", b"x")
    assert not q.put("e", b""), "over the message bound"
    assert q.dropped == 2 and len(q) == 3
    assert [q.get(), q.get(), q.get(), q.get()] == [
        ("b", b"x" * 40),
        ("c", b"x"),
        ("d", b"x"),
        None,
    ]
    assert q.put("f", b"x" * 100) and len(q) == 1
