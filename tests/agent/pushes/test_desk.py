"""The gateway's push desk fed malformed and hostile messages: each is rejected or ignored,
none stops the agent, and what runs does not change."""

from __future__ import annotations

import base64
import json
import time

import pytest

from agent.envelope import _signed_bytes, seal
from agent.pushes.desk import Desk
from agent.pushes.state import RECENT_PUSHES
from agent.pushes.trial import Health
from tests.agent.pushes.conftest import BASE, DEVICE, signed
from tests.conftest import ROOT


def _resign(key, doc: dict) -> bytes:
    doc["signature"] = base64.b64encode(key.sign(_signed_bytes(doc))).decode()
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (f"{BASE}/config/chunk/²", b'{"sha256": "x", "data": ""}'),
        (f"{BASE}/config/chunk/{'9' * 5000}", b'{"sha256": "x", "data": ""}'),
        (f"{BASE}/config/chunk/3", b"\xff\xfe"),
        (f"{BASE}/config", b"[" * 200_000),
        (f"{BASE}/config", b"\xff\xfe not utf-8"),
        (f"{BASE}/config", b'{"signature": 5, "kind": [], "target": {}}'),
        (f"{BASE}/other", b"{}"),
    ],
)
def test_unsigned_garbage_never_raises(desk, topic: str, payload: bytes):
    d, _ = desk
    decision = d.offer(topic, payload)
    assert decision is None or decision.status == "rejected"
    assert d.state.current == {} and d.state.pending is None


def test_signed_but_malformed_content_is_rejected(desk):
    d, key = desk
    cases = [
        (b"\xff\xfe", "malformed push"),  # not UTF-8
        (b"storage = 5\n", "must be a [storage] table"),
        (b'[topics]\nprefix = "elsewhere"\n', "[topics] cannot be pushed"),
        (b"[alerts\n", "not valid TOML"),
    ]
    for version, (content, reason) in enumerate(cases, start=1):
        payload, _, _ = signed(key, "config", version, content)
        decision = d.offer(f"{BASE}/config", payload)
        assert decision is not None and decision.status == "rejected", content
        assert reason in decision.reason, (content, decision.reason)
    _, doc, _ = signed(key, "config", 10, b"x = 1\n")
    doc["content"] = "!!not base64!!"
    decision = d.offer(f"{BASE}/config", _resign(key, doc))
    assert decision is not None and "not base64" in decision.reason
    assert d.state.current == {}


def test_a_missing_chunk_index_is_waited_for_not_assumed(desk):
    d, key = desk
    content = b"[alerts]\nfire_after = 4\n" + b"#" * 226  # 250 bytes: three chunks of 100
    doc, chunks = seal(key, "config", f"device:{DEVICE}", 3, content, chunk_bytes=100)
    assert len(chunks) == 3
    assert d.offer(f"{BASE}/config", json.dumps(doc).encode()) is None
    sha = doc["sha256"]
    for index in (0, 1):
        body = {"sha256": sha, "index": index, "data": base64.b64encode(chunks[index]).decode()}
        assert d.offer(f"{BASE}/config/chunk/{index}", json.dumps(body).encode()) is None
    # A stranger's chunk 999 with the public sha makes three parts, not chunks 0 to 2.
    stranger = json.dumps({"sha256": sha, "index": 999, "data": ""}).encode()
    assert d.offer(f"{BASE}/config/chunk/999", stranger) is None
    assert d.state.current == {}
    body = {"sha256": sha, "index": 2, "data": base64.b64encode(chunks[2]).decode()}
    decision = d.offer(f"{BASE}/config/chunk/2", json.dumps(body).encode())
    assert decision is not None and decision.switch, "the real third chunk completes it"


def test_a_rollback_cannot_be_moved_to_the_other_kind(desk):
    d, key = desk
    payload, _, _ = signed(key, "rollback", 7, json.dumps({"kind": "config"}).encode())
    decision = d.offer(f"{BASE}/model", payload)
    assert decision is not None and "a rollback of 'config' on a model topic" in decision.reason


def test_a_push_of_the_other_kind_waits_for_the_trial(desk):
    d, key = desk
    payload, _, _ = signed(key, "config", 5, b"[alerts]\nfire_after = 4\n")
    assert d.offer(f"{BASE}/config", payload).switch
    model_push, _, _ = signed(key, "model", 6, b"\x08not yet looked at")
    assert d.offer(f"{BASE}/model", model_push) is None
    assert d.deferred == [(f"{BASE}/model", model_push)]
    assert d.state.pending["kind"] == "config"


def test_a_copy_of_a_full_local_config_is_refused_for_its_local_sections(desk):
    d, key = desk
    local_config = (ROOT / "device_configs" / "default.toml").read_bytes()
    payload, _, _ = signed(key, "config", 1, local_config)
    decision = d.offer(f"{BASE}/config", payload)
    assert decision is not None and decision.status == "rejected"
    assert decision.reason.startswith(
        "[device], [local], [upstream], [topics], [model] cannot be pushed"
    ), decision.reason
    # A top-level setting on its own is no table, and may be pushed.
    payload, _, _ = signed(key, "config", 2, b'log_level = "debug"\n')
    assert d.offer(f"{BASE}/config", payload).switch


@pytest.mark.parametrize(
    "content",
    [
        b'[metrics]\ntextfile = "agent.db"\n',
        b'[metrics]\ntextfile = "/tmp/edge-agent.prom"\n',
        b'[storage]\ndata_dir = "/tmp/elsewhere"\n',
    ],
)
def test_a_pushed_config_may_not_name_files(desk, content: bytes):
    d, key = desk
    payload, _, _ = signed(key, "config", 1, content)
    decision = d.offer(f"{BASE}/config", payload)
    assert decision is not None and decision.status == "rejected"
    assert "cannot be pushed: a push may not name files" in decision.reason
    assert d.state.current == {}


def test_levels_that_clash_with_the_model_are_rejected_before_the_switch(desk):
    """The model's own levels are merged with the overlay's and checked, as `run` builds them."""
    d, key = desk
    payload, _, _ = signed(key, "config", 1, b"[alerts.levels]\ncritical = 0.0\n")
    decision = d.offer(f"{BASE}/config", payload)
    assert decision is not None and decision.status == "rejected"
    assert "alerts.levels: critical = 0.0 with the model's levels" in decision.reason
    assert d.state.current == {} and d.state.pending is None


def test_recent_push_outcomes_survive_later_reports(desk):
    """A rollback's reason stays in the status (and the saved state) when later pushes are
    rejected, up to a bound."""
    d, key = desk
    payload, _, _ = signed(key, "config", 1, b"[alerts]\nfire_after = 4\n")
    assert d.offer(f"{BASE}/config", payload).switch
    d.roll_back("could not start: port in use")
    for version in range(2, 1 + RECENT_PUSHES):
        payload, _, _ = signed(key, "config", version, b'[alerts]\ncolour = "red"\n')
        assert d.offer(f"{BASE}/config", payload).status == "rejected"
    d.flush()  # rejections are written at most once per interval
    status = Desk(d.config, d.source, d.sensors).status()  # from the saved state
    assert status["last_push"]["status"] == "rejected"
    assert status["recent_pushes"][0]["reason"] == "could not start: port in use"
    assert [p["status"] for p in status["recent_pushes"][1:]] == ["rejected"] * (RECENT_PUSHES - 1)
    payload, _, _ = signed(key, "config", 99, b'[alerts]\ncolour = "red"\n')
    d.offer(f"{BASE}/config", payload)
    recent = d.status()["recent_pushes"]
    assert len(recent) == RECENT_PUSHES and recent[-1]["version"] == 99, "bounded, newest last"


class SteppedClocks:
    """A wall clock that jumps and a monotonic one that does not."""

    def __init__(self) -> None:
        self.monotonic = 1000.0
        self.wall = 1_800_000_000.0


@pytest.mark.parametrize("step_s", [30 * 86400, -30 * 86400])
def test_a_trial_lasts_its_time_whatever_the_wall_clock_does(monkeypatch, step_s: float):
    clocks = SteppedClocks()
    monkeypatch.setattr("time.time", lambda: clocks.wall)
    health = Health(clocks.monotonic, 60.0, clock=lambda: clocks.monotonic)
    health.consuming = True
    clocks.wall += step_s  # NTP corrects the clock in mid-trial
    clocks.monotonic += 1
    assert health.verdict(20, 0.5) is None, "1 s into a 60 s trial: undecided"
    clocks.monotonic += 59
    assert health.verdict(20, 0.5) == "", "60 s of elapsed time: healthy"


def _chunk_body(sha: str, index: int, data: bytes) -> bytes:
    body = {"sha256": sha, "index": index, "data": base64.b64encode(data).decode()}
    return json.dumps(body).encode()


def test_chunks_are_taken_only_for_a_verified_envelope_a_few_at_a_time(desk):
    d, key = desk
    content = b"[alerts]\nfire_after = 4\n" + b"#" * 976  # 1,000 bytes: ten chunks of 100
    doc, chunks = seal(key, "config", f"device:{DEVICE}", 3, content, chunk_bytes=100)
    sha = doc["sha256"]
    # Chunks before their envelope (real ones and junk) are not kept: the broker keeps them.
    for index, data in enumerate(chunks):
        assert d.offer(f"{BASE}/config/chunk/{index}", _chunk_body(sha, index, data)) is None
    assert d.offer(f"{BASE}/model/chunk/0", _chunk_body("0" * 64, 0, b"junk" * 1000)) is None
    assert d.chunk_topics() == set()
    assert d.offer(f"{BASE}/config", json.dumps(doc).encode()) is None
    assert d.chunk_topics() == {f"{BASE}/config/chunk/{i}" for i in range(4)}
    # The same envelope again (its retained copy, on a resubscription) keeps what came.
    assert d.offer(f"{BASE}/config/chunk/1", _chunk_body(sha, 1, chunks[1])) is None
    assert d.offer(f"{BASE}/config", json.dumps(doc).encode()) is None
    assert d.chunk_topics() == {f"{BASE}/config/chunk/{i}" for i in (0, 2, 3, 4)}
    decision = None
    for index in (0, 2, 3, 4, 5, 6, 7, 8, 9):
        decision = d.offer(f"{BASE}/config/chunk/{index}", _chunk_body(sha, index, chunks[index]))
    assert decision is not None and decision.switch
    assert d.chunk_topics() == set()


def test_a_push_whose_chunks_do_not_come_is_reported_incomplete_and_freed(desk):
    d, key = desk
    content = b"[alerts]\nfire_after = 4\n" + b"#" * 276  # 300 bytes: three chunks
    doc, chunks = seal(key, "config", f"device:{DEVICE}", 3, content, chunk_bytes=100)
    assert d.offer(f"{BASE}/config", json.dumps(doc).encode()) is None
    assert d.offer(f"{BASE}/config/chunk/0", _chunk_body(doc["sha256"], 0, chunks[0])) is None
    timeout = d.config.fleet.chunk_timeout_s
    assert d.expire(time.monotonic()) is None, "not yet"
    decision = d.expire(time.monotonic() + timeout + 1)
    assert decision is not None and decision.status == "incomplete"
    assert d.state.last_push["status"] == "incomplete" and d.state.last_push["version"] == 3
    assert "1 of 3 chunks came" in d.state.last_push["reason"]
    assert d.chunk_topics() == set() and d.state.current == {}
    d.flush()
    assert _saved(d)["last_push"]["status"] == "incomplete"


def _saved(d: Desk) -> dict:
    return json.loads((d.folder / "state.json").read_text())


def test_rejections_are_written_at_most_once_per_interval_accepted_pushes_at_once(desk):
    d, key = desk
    d.offer(f"{BASE}/config", b'{"kind": "config"}')
    assert _saved(d)["last_push"]["reason"] == "unsigned push", "the first one is written"
    for _ in range(500):
        d.offer(f"{BASE}/config", b"not json")
    assert d.state.last_push["reason"].startswith("not a JSON envelope"), "reported at once"
    assert _saved(d)["last_push"]["reason"] == "unsigned push", "not 500 writes"
    d.tick(time.monotonic() + 11)
    assert _saved(d)["last_push"]["reason"].startswith("not a JSON envelope"), "written when due"
    d.offer(f"{BASE}/config", b"not json either")
    payload, _, _ = signed(key, "config", 5, b"[alerts]\nfire_after = 4\n")
    assert d.offer(f"{BASE}/config", payload).switch
    assert _saved(d)["last_push"]["status"] == "checking", "an accepted push is never held back"


def test_a_flood_of_unsigned_junk_does_not_push_a_rollback_out_of_recent_pushes(desk):
    """Anyone can publish on push topics: what fails verification shows in last_push only."""
    d, key = desk
    payload, _, _ = signed(key, "config", 1, b"[alerts]\nfire_after = 4\n")
    assert d.offer(f"{BASE}/config", payload).switch
    d.roll_back("could not start: port in use")
    for _ in range(2 * RECENT_PUSHES):
        assert d.offer(f"{BASE}/config", b"not json").status == "rejected"
    assert d.status()["last_push"]["reason"].startswith("not a JSON envelope")
    recent = d.status()["recent_pushes"]
    assert [p["status"] for p in recent] == ["rolled_back"], recent
    assert recent[0]["reason"] == "could not start: port in use"


def test_replayed_signed_pushes_do_not_push_a_rollback_out_of_recent_pushes(desk):
    """Signed envelopes are retained on the broker and can be captured by anyone who reads
    the topics; replayed in a loop (an old one, or another device's on this one's topic), each
    was an outcome in recent_pushes, and eight of them hid a rollback's reason. A replay shows
    in last_push only."""
    d, key = desk
    old, _, _ = signed(key, "config", 1, b"[alerts]\nfire_after = 4\n")
    assert d.offer(f"{BASE}/config", old).switch
    d.passed()
    payload, _, _ = signed(key, "config", 2, b"[alerts]\nfire_after = 5\n")
    assert d.offer(f"{BASE}/config", payload).switch
    d.roll_back("could not start: port in use")
    for _ in range(2 * RECENT_PUSHES):
        assert d.offer(f"{BASE}/config", old).status == "rejected"
    assert d.status()["last_push"]["reason"].startswith("stale: version 1")
    # Another device's signed push, copied onto this device's topic.
    elsewhere, _, _ = signed(key, "config", 9, b"[alerts]\nfire_after = 6\n", "device:gw-x")
    for _ in range(2 * RECENT_PUSHES):
        assert d.offer(f"{BASE}/config", elsewhere).status == "rejected"
    assert d.status()["last_push"]["reason"].startswith("envelope for device:gw-x/config")
    recent = d.status()["recent_pushes"]
    assert [(p["version"], p["status"]) for p in recent] == [(1, "applied"), (2, "rolled_back")]
    assert recent[-1]["reason"] == "could not start: port in use"


@pytest.mark.parametrize(
    ("listen", "accepted"),
    [
        ("9109", True),
        ("127.0.0.1:9109", True),
        ("localhost:9109", True),
        ("[::1]:9109", True),
        ("0.0.0.0:9109", False),
        ("192.168.1.10:9109", False),
        ("[::]:9109", False),
        ("gateway.example:9109", False),
    ],
)
def test_a_push_may_bind_metrics_to_loopback_only(desk, listen: str, accepted: bool):
    """Anyone holding the fleet key must not be able to open /metrics to the network."""
    d, key = desk
    payload, _, _ = signed(key, "config", 1, f'[metrics]\nlisten = "{listen}"\n'.encode())
    decision = d.offer(f"{BASE}/config", payload)
    assert decision is not None
    if accepted:
        assert decision.switch, decision.reason
    else:
        assert decision.status == "rejected"
        assert "a push may only bind /metrics to loopback" in decision.reason
