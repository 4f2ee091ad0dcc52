"""The saved fleet state across an upgrade: a state.json written by an agent before issue 14
(versions and `#sha` hashes side by side in `seen`) keeps its replay protection."""

from __future__ import annotations

import json

from agent.pushes.desk import Desk
from agent.pushes.state import STATE_FILE, FleetState, SeenVersion
from tests.agent.pushes.conftest import BASE, DEVICE, signed

STREAM = f"device:{DEVICE}/config"


def _write_old_layout(d: Desk, seen: dict[str, object]) -> None:
    """state.json as an agent before issue 14 wrote it, with `seen` as given."""
    d.folder.mkdir(parents=True, exist_ok=True)
    old = {
        "current": {},
        "previous": {},
        "seen": seen,
        "last_push": None,
        "pending": None,
        "recent_pushes": [],
    }
    (d.folder / STATE_FILE).write_text(json.dumps(old, indent=1))


def test_an_old_state_json_keeps_its_replay_protection(desk):
    d, key = desk
    payload, doc, _ = signed(key, "config", 5, b"[alerts]\nfire_after = 4\n")
    _write_old_layout(d, {STREAM: 5, f"{STREAM}#sha": doc["sha256"]})
    upgraded = Desk(d.config, d.source, d.sensors)
    assert upgraded.state.seen == {STREAM: SeenVersion(5, doc["sha256"])}
    assert upgraded.offer(f"{BASE}/config", payload) is None, "its retained copy: skipped"
    older, _, _ = signed(key, "config", 4, b"[alerts]\nfire_after = 3\n")
    decision = upgraded.offer(f"{BASE}/config", older)
    assert decision is not None and decision.status == "rejected"
    assert decision.reason == "stale: version 4 is not newer than 5"
    assert upgraded.state.current == {}
    assert list(d.folder.glob(f"{STATE_FILE}.damaged-*")) == [], "read, not moved aside"


def test_a_saved_state_is_written_in_the_new_layout_and_read_back(desk):
    d, key = desk
    payload, doc, _ = signed(key, "config", 5, b"[alerts]\nfire_after = 4\n")
    _write_old_layout(d, {STREAM: 5, f"{STREAM}#sha": doc["sha256"]})
    FleetState.load(d.folder).save(d.folder)
    saved = json.loads((d.folder / STATE_FILE).read_text())
    assert saved["seen"] == {STREAM: {"version": 5, "sha256": doc["sha256"]}}
    again = Desk(d.config, d.source, d.sensors)
    assert again.state.seen == {STREAM: SeenVersion(5, doc["sha256"])}
    assert again.offer(f"{BASE}/config", payload) is None


def test_a_version_without_its_hash_still_makes_older_pushes_stale(desk):
    d, key = desk
    _write_old_layout(d, {STREAM: 5})
    upgraded = Desk(d.config, d.source, d.sensors)
    assert upgraded.state.seen == {STREAM: SeenVersion(5, "")}
    older, _, _ = signed(key, "config", 5, b"[alerts]\nfire_after = 3\n")
    decision = upgraded.offer(f"{BASE}/config", older)
    assert decision is not None and decision.reason == "stale: version 5 is not newer than 5"


def test_a_seen_entry_that_is_not_a_version_moves_the_state_aside(desk):
    d, _ = desk
    _write_old_layout(d, {STREAM: "five", f"{STREAM}#sha": "ab"})
    assert FleetState.load(d.folder) == FleetState()
    assert len(list(d.folder.glob(f"{STATE_FILE}.damaged-*"))) == 1
