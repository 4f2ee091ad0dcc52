"""The store on real SQLite files: budget and hard cap, expiry, state, corrupt databases."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent.alert import Alert
from agent.budget import MIB, Budget
from agent.export import ExportError, export_readings
from agent.ingest import DeadLetter
from agent.readings import INSERT, OLD_TABLE, ReadingBlock, _block_of_rows, stored_readings
from agent.store.batch import AssetState, Batch
from agent.store.commands import open_existing, reset_asset
from agent.store.database import DB_NAME, Store
from agent.store.schema import _SCHEMA
from agent.window import WindowState
from tests.conftest import ROOT

TOPIC = "edge/gw/alerts/pump-1"
VALUES = np.array([1.5, 2.5, 3.5, 4.5, 5.5])


def _readings(n: int, start: int = 0) -> list[ReadingBlock]:
    ts = np.arange(start, start + n, dtype=np.float64)
    return [ReadingBlock.of("pump-1", ts, np.tile(VALUES, (n, 1)), score=np.full(n, 0.1))]


def _alert(n: int, size: int = 200) -> tuple[str, Alert]:
    payload = {"id": f"a{n:06d}", "message": "x" * size}
    return TOPIC, Alert(f"a{n:06d}", "pump-1", "firing", "info", payload)


def _alert_ids(store: Store) -> list[str]:
    return [row[0] for row in store.conn.execute("SELECT alert_id FROM outbox ORDER BY seq")]


def test_over_budget_the_oldest_readings_go_first_and_pending_alerts_stay(tmp_path: Path):
    store = Store(tmp_path, Budget(max_bytes=1 * MIB, hard_cap_bytes=8 * MIB))
    for b in range(40):
        store.commit_batch(Batch(readings=_readings(500, start=b * 500), alerts=[_alert(b)]))
    stats = store.stats()
    assert stats["used_bytes"] <= 1 * MIB
    assert stats["evictions_by_reason"]["readings"] > 0
    assert stats["alerts_pending"] == 40, "pending alerts are not evicted under the budget"
    newest = store.conn.execute("SELECT max(last_ts), min(first_ts) FROM readings").fetchone()
    assert newest[0] == 40 * 500 - 1 and newest[1] > 0, "the oldest readings went, not the newest"
    assert stats["readings"] + stats["evictions_by_reason"]["readings"] == 40 * 500


def test_delivered_alerts_go_before_pending_ones(tmp_path: Path):
    store = Store(tmp_path, Budget(max_bytes=1 * MIB, hard_cap_bytes=8 * MIB))
    for b in range(10):  # delivered ones first: the oldest rows are the ones that must stay
        store.commit_batch(Batch(alerts=[_alert(b * 100 + i, size=2000) for i in range(100)]))
        store.mark_delivered(
            [seq for (seq,) in store.conn.execute("SELECT seq FROM outbox ORDER BY seq")]
        )
    store.commit_batch(Batch(alerts=[_alert(5000 + i, size=2000) for i in range(100)]))
    stats = store.stats()
    assert stats["evictions_by_reason"].get("delivered_alerts", 0) > 0
    assert stats["alerts_pending"] == 100
    assert stats["used_bytes"] <= 1 * MIB


def test_at_the_hard_cap_the_oldest_pending_alerts_go_and_commits_go_on(tmp_path: Path):
    store = Store(tmp_path, Budget(max_bytes=1 * MIB, hard_cap_bytes=1 * MIB))
    for b in range(30):  # ~3 MiB of alerts that nobody acknowledges
        store.commit_batch(Batch(alerts=[_alert(b * 50 + i, size=2000) for i in range(50)]))
    stats = store.stats()
    evicted = stats["evictions_by_reason"]["pending_alerts_at_hard_cap"]
    ids = _alert_ids(store)
    assert evicted > 0 and len(ids) + evicted == 30 * 50
    assert ids[-1] == f"a{30 * 50 - 1:06d}" and ids[0] != "a000000", "oldest first"
    assert (tmp_path / DB_NAME).stat().st_size <= 1 * MIB + 64 * 1024


class FakeMonotonic:
    """A monotonic clock the test moves: what the store measures alert ages on."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_expired_alerts_are_counted_and_not_offered_again(tmp_path: Path):
    clock = FakeMonotonic(1000.0)
    store = Store(tmp_path, monotonic=clock)
    store.commit_batch(Batch(alerts=[_alert(1), _alert(2)]))
    clock.now += 60
    assert store.expire(older_than_s=60) == 0, "not older than the time to live"
    clock.now += 1
    assert store.expire(older_than_s=60) == 2
    assert store.pending(after_seq=0, limit=10) == []
    assert store.stats()["alerts_expired"] == 2


def test_alert_age_is_running_time_whatever_the_wall_clock_does(tmp_path: Path, monkeypatch):
    """#13 item 8: a wall clock stepped back a year neither stretches nor (stepped forward)
    shortens an alert's time to live; the age counted survives a restart."""
    ttl = 3600
    clock = FakeMonotonic(50.0)
    store = Store(tmp_path, monotonic=clock)
    store.commit_batch(Batch(alerts=[_alert(1)]))
    clock.now += 1000
    store.close()
    monkeypatch.setattr(time, "time", lambda: 1.0e9)  # stepped back decades (2001)
    clock = FakeMonotonic(7.0)  # a reboot: the monotonic clock starts again
    store = Store(tmp_path, monotonic=clock)
    clock.now += ttl - 1000 - 1
    assert store.expire(older_than_s=ttl) == 0
    clock.now += 2
    assert store.expire(older_than_s=ttl) == 1, "1000 s before the restart + the rest after"
    store.close()


def test_alerts_of_a_database_without_elapsed_time_get_their_whole_time_to_live(tmp_path: Path):
    """A database from before elapsed time: its pending alerts, aged by a wall clock that may
    have been wrong, start their time to live at the upgrade instead of expiring at once."""
    month_ago = time.time() - 30 * 86400
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, alert_id TEXT NOT NULL, "
            "topic TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL, delivered_at REAL, "
            "expired_at REAL)"
        )
        db.execute(
            "INSERT INTO outbox (alert_id, topic, payload, created_at) VALUES (?, ?, ?, ?)",
            ("old", TOPIC, '{"id": "old"}', month_ago),
        )
    clock = FakeMonotonic(0.0)
    store = Store(tmp_path, monotonic=clock)
    assert store.expire(older_than_s=7 * 86400) == 0
    assert [item.payload for item in store.pending(0, 10)] == [b'{"id": "old"}']
    clock.now += 7 * 86400 + 1
    assert store.expire(older_than_s=7 * 86400) == 1
    store.close()


_FIGURES = ("readings", "alerts_pending", "alerts_delivered", "alerts_expired", "dead_letters")


def _same_figures(store: Store) -> dict[str, object]:
    counted, kept = store.stats(), store.figures()
    for key in (*_FIGURES, "evictions_by_reason", "used_bytes"):
        assert kept[key] == counted[key], (key, kept[key], counted[key])
    return kept


def _dead(n: int) -> list[DeadLetter]:
    return [DeadLetter("edge/gw/readings/x", "invalid_json", "", 1.0, b"{") for _ in range(n)]


def test_kept_figures_equal_a_full_count_through_every_kind_of_write(tmp_path: Path):
    """#13 item 11: the status and /metrics read counters kept by each write instead of
    scanning the tables; they must stay equal to a full count through commits, budget and
    hard-cap evictions, deliveries (also of expired alerts), expiry and a restart."""
    clock = FakeMonotonic(0.0)
    budget = Budget(max_bytes=1 * MIB, hard_cap_bytes=2 * MIB)
    store = Store(tmp_path, budget, monotonic=clock)
    seen = dict.fromkeys(_FIGURES, 0)
    for b in range(60):
        alerts = [_alert(b * 20 + i, size=2000) for i in range(20)]
        batch = Batch(readings=_readings(300, start=b * 300), alerts=alerts, dead=_dead(3))
        store.commit_batch(batch)
        store.commit_batch(Batch(alerts=alerts[:5]))  # copies: not counted twice
        clock.now += 10
        if b % 3 == 0:
            store.expire(older_than_s=25)
        if b % 4 == 0:  # delivered, some after they expired, some twice
            seqs = [r[0] for r in store.conn.execute("SELECT seq FROM outbox ORDER BY seq")]
            store.mark_delivered(seqs[-30:])
        kept = _same_figures(store)
        seen = {k: max(v, kept[k]) for k, v in seen.items()}
    evicted = kept["evictions_by_reason"]
    for reason in ("readings", "dead_letters", "delivered_alerts", "expired_alerts"):
        assert evicted.get(reason, 0) > 0, f"the test evicts {reason}"
    assert min(seen.values()) > 0, f"every figure was exercised: {seen}"
    store.close()
    reopened = Store(tmp_path, monotonic=clock)
    assert {k: reopened.figures()[k] for k in _FIGURES} == {k: kept[k] for k in _FIGURES}
    _same_figures(reopened)
    reopened.close()


def test_stats_beside_a_running_agent_count_from_one_snapshot(tmp_path: Path):
    """`buffer stats` (and the system tests' waits) open the database beside the agent,
    which commits a batch at any moment. Each count was its own statement: a batch committed
    between them was counted in `dead_letters` and not in `dead_letters_by_reason` (a loaded
    CI run saw 7,400 against 7,350). Here the agent commits between the first count and the
    rest."""
    agent = Store(tmp_path)
    agent.commit_batch(Batch(dead=_dead(3)))
    inspector = open_existing(tmp_path)
    statements = []

    def agent_commits_meanwhile(sql: str) -> None:
        statements.append(sql)
        if len(statements) == 3:  # after the first count has read its rows
            agent.commit_batch(Batch(dead=_dead(2)))

    inspector.conn.set_trace_callback(agent_commits_meanwhile)
    stats = inspector.stats()
    inspector.conn.set_trace_callback(None)
    assert len(statements) > 3, "premise: the agent committed in the middle of the counts"
    assert sum(stats["dead_letters_by_reason"].values()) == stats["dead_letters"], stats
    assert stats["dead_letters"] == 3, "the snapshot from before the agent's commit"
    assert inspector.stats()["dead_letters"] == 5
    inspector.close()
    agent.close()


def test_kept_figures_follow_pending_alerts_evicted_at_the_hard_cap(tmp_path: Path):
    store = Store(tmp_path, Budget(max_bytes=1 * MIB, hard_cap_bytes=1 * MIB))
    for b in range(30):
        store.commit_batch(Batch(alerts=[_alert(b * 50 + i, size=2000) for i in range(50)]))
        _same_figures(store)
    assert store.figures()["evictions_by_reason"]["pending_alerts_at_hard_cap"] > 0
    store.close()


def test_scoring_state_survives_reopening_and_is_dropped_for_another_model(tmp_path: Path):
    state = AssetState("pump-1", WindowState(b"\x00" * 40, 2, 123.0), '{"above": 1}')
    store = Store(tmp_path)
    store.load_states("model-a")
    store.commit_batch(Batch(states=[state], digests=[(b"d" * 16, True)]))
    store.close()
    again = Store(tmp_path)
    assert again.load_states("model-a") == [state]
    assert again.recent_digests(10) == [(b"d" * 16, True)]
    assert again.load_states("model-b") == [], "windows of another model do not fit"


def test_a_database_that_is_not_sqlite_is_moved_aside_and_reported(tmp_path: Path):
    garbage = b"this is not a database" * 100
    (tmp_path / DB_NAME).write_bytes(garbage)
    store = Store(tmp_path)
    assert store.moved_aside is not None and store.moved_aside.read_bytes() == garbage
    assert store.stats()["moved_aside"] == [str(store.moved_aside)]
    store.commit_batch(Batch(readings=_readings(3)))
    assert store.stats()["readings"] == 3


def test_a_database_with_damaged_pages_is_moved_aside(tmp_path: Path):
    store = Store(tmp_path)
    store.commit_batch(Batch(readings=_readings(5000)))
    store.close()
    path = tmp_path / DB_NAME
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = b"\xa5" * 4096
    path.write_bytes(bytes(data))
    reopened = Store(tmp_path)
    assert reopened.moved_aside is not None and reopened.moved_aside.exists()
    assert reopened.stats()["readings"] == 0


def _damage_middle(path: Path) -> None:
    """4 KiB of garbage in the middle of the file: a bad SD card sector."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = b"\xa5" * 4096
    path.write_bytes(bytes(data))


def test_what_a_damaged_database_still_holds_is_salvaged_pending_alerts_first(tmp_path: Path):
    """#13 item 10: the damaged file is moved aside as before, but its pending alerts (and the
    readings and scoring state that can still be read) go into the fresh database, and the
    quarantine is recorded for the status, the metrics and `buffer stats`."""
    state = AssetState("pump-1", WindowState(b"\x00" * 40, 2, 123.0), '{"above": 1}')
    store = Store(tmp_path)
    store.load_states("model-a")
    store.commit_batch(Batch(alerts=[_alert(1), _alert(2), _alert(3)], states=[state]))
    store.mark_delivered([1])
    for b in range(10):
        store.commit_batch(Batch(readings=_readings(500, start=b * 500)))
    store.close()
    _damage_middle(tmp_path / DB_NAME)

    reopened = Store(tmp_path)
    assert reopened.moved_aside is not None and reopened.moved_aside.exists()
    assert [item.payload for item in reopened.pending(0, 10)] == [
        json.dumps(_alert(n)[1].payload, separators=(",", ":")).encode() for n in (2, 3)
    ]
    assert reopened.load_states("model-a") == [state]
    stats = reopened.stats()
    assert 0 < stats["readings"] < 5000, "the readings on readable pages"
    (incident,) = stats["storage_incidents"]
    assert incident["kind"] == "corrupt" and incident["moved_to"] == str(reopened.moved_aside)
    assert incident["at"].endswith("Z"), "now as every agent stamp writes it"
    assert incident["salvaged"]["pending_alerts"] == 2
    assert incident["salvaged"]["readings"] == len(
        reopened.conn.execute("SELECT id FROM readings").fetchall()
    )
    assert reopened.incident_counts == {"corrupt": 1}
    assert reopened.figures()["alerts_pending"] == 2
    reopened.close()


_CRASH = """
import os, signal, sys
import numpy as np
from agent.alert import Alert
from agent.readings import ReadingBlock
from agent.store.batch import Batch
from agent.store.database import Store
store = Store(sys.argv[1])
for b in range(40):
    ts = np.arange(b * 20, (b + 1) * 20, dtype=np.float64)
    alert = Alert(f"a{b}", "pump-1", "firing", "info", {"id": f"a{b}"})
    block = ReadingBlock.of("pump-1", ts, np.ones((20, 5)))
    store.commit_batch(Batch(readings=[block], alerts=[("edge/gw/alerts/pump-1", alert)]))
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_after_commits(folder: Path) -> Path:
    """A database as `kill -9` leaves it: 40 commits, all in the WAL."""
    subprocess.run([sys.executable, "-c", _CRASH, str(folder)], cwd=ROOT, check=False)
    wal = folder / (DB_NAME + "-wal")
    assert wal.stat().st_size > 40 * 4096, "the commits are in the WAL, not checkpointed"
    return wal


def test_a_wal_damaged_after_a_crash_is_reported_not_silently_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """#13 item 10: one byte flipped in the WAL of a killed agent. SQLite replays the WAL up
    to the damaged frame and drops the commits after it; that cannot be undone, but it is
    detected before SQLite opens the file, logged, recorded and the WAL kept as evidence."""
    wal = _killed_after_commits(tmp_path)
    data = bytearray(wal.read_bytes())
    page_size = int.from_bytes(data[8:12], "big")
    # A byte of the sixth frame's page: frames from the start are of the current generation
    # (after an automatic checkpoint the WAL restarts there; older frames follow).
    data[32 + 5 * (24 + page_size) + 24 + 100] ^= 0x01
    wal.write_bytes(bytes(data))
    damaged = bytes(data)

    with caplog.at_level(logging.ERROR, logger="agent.store"):
        store = Store(tmp_path)
    stats = store.stats()
    assert stats["readings"] < 40 * 20 and stats["alerts_pending"] < 40, "SQLite dropped some"
    (incident,) = stats["storage_incidents"]
    assert incident["kind"] == "wal_damaged", incident
    assert "committed transaction" in incident["detail"]
    assert Path(incident["kept"]).read_bytes() == damaged
    assert store.incident_counts == {"wal_damaged": 1}
    assert "wal_damaged" in caplog.text
    store.close()


def test_a_damaged_wal_header_is_reported(tmp_path: Path):
    """A flipped bit in the WAL header's salt: SQLite ignores the whole WAL."""
    wal = _killed_after_commits(tmp_path)
    data = bytearray(wal.read_bytes())
    data[17] ^= 0x01
    wal.write_bytes(bytes(data))
    store = Store(tmp_path)
    assert store.stats()["readings"] < 40 * 20
    assert "WAL header damaged" in store.incidents[-1]["detail"]
    store.close()


def test_a_wal_left_by_a_crash_that_is_intact_is_no_incident(tmp_path: Path):
    _killed_after_commits(tmp_path)
    store = Store(tmp_path)
    stats = store.stats()
    assert (stats["readings"], stats["alerts_pending"]) == (40 * 20, 40), "nothing lost"
    assert stats["storage_incidents"] == []
    store.close()


def test_inspection_never_moves_a_database(tmp_path: Path):
    (tmp_path / DB_NAME).write_bytes(b"garbage" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        open_existing(tmp_path)
    assert (tmp_path / DB_NAME).read_bytes() == b"garbage" * 100


def _old_database(folder: Path, rows: list[tuple]) -> None:
    """A database as an earlier release left it: a `readings` row per reading."""
    with sqlite3.connect(folder / DB_NAME) as db:
        db.execute(
            "CREATE TABLE readings (id INTEGER PRIMARY KEY, asset TEXT, ts REAL, "
            "sensor_values BLOB, score REAL, level TEXT, received_at REAL)"
        )
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('sensors', '[\"a\", \"b\"]')")
        db.executemany(
            "INSERT INTO readings (asset, ts, sensor_values, score, level, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )


def _old_row(asset: str, t: float, score: float | None = None, level: str | None = None):
    return (asset, t, np.array([t, -t], "<f8").tobytes(), score, level, 5.0)


def test_readings_stored_one_per_row_by_an_older_agent_are_packed_when_it_starts(tmp_path: Path):
    """Every reading kept, in time order per asset, with its score and level — also where an
    asset's times ran backwards (a model change restarts its windows). Inspection counts them
    without packing; export says what to do until the agent has started."""
    times = [10, 11, 12, 3, 4, 13]  # p1 replayed older readings after a model change
    rows = [_old_row("p1", t, 0.2 if t > 10 else None) for t in times]
    rows[2:2] = [_old_row("p2", 1.0, 0.6, "info")]
    _old_database(tmp_path, rows)
    inspected = open_existing(tmp_path)
    assert inspected.stats()["readings"] == 7
    inspected.close()
    with pytest.raises(ExportError, match="start the agent once"):
        export_readings(tmp_path, tmp_path / "early.csv")
    store = Store(tmp_path)
    assert store.stats()["readings"] == 7
    back = list(stored_readings(store.conn))
    assert [(r.asset, r.ts) for r in back] == [("p1", t) for t in sorted(times)] + [("p2", 1.0)]
    assert all(r.values == [r.ts, -r.ts] for r in back)
    assert [r.level for r in back][-1] == "info" and back[-1].score == pytest.approx(0.6)
    assert [r.ts for r in stored_readings(store.conn, since=4, until=12)] == [4, 10, 11]
    store.close()
    assert export_readings(tmp_path, tmp_path / "out.csv") == 7


def test_packing_resumes_where_an_interrupted_start_left_it(tmp_path: Path):
    """Packing goes in committed chunks that delete the packed rows: a start killed halfway
    leaves the rest in `readings_per_row`, and the next start finishes it, nothing lost or
    doubled. Rows with another number of sensors (a model change) get their own blocks."""
    rows = [_old_row("p1", float(t)) for t in range(2500)]
    rows.append(("p1", 9999.0, np.zeros(3).tobytes(), None, None, 5.0))
    _old_database(tmp_path, rows)
    with sqlite3.connect(tmp_path / DB_NAME, isolation_level=None) as db:
        db.execute(f"ALTER TABLE readings RENAME TO {OLD_TABLE}")
        db.executescript(_SCHEMA)
        assert pack_old_rows_partly(db) == 1000
    store = Store(tmp_path)
    assert OLD_TABLE not in {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
    back = list(stored_readings(store.conn))
    assert [r.ts for r in back] == [*range(2500), 9999.0]
    assert back[-1].values == [0.0, 0.0, 0.0]
    store.close()


def pack_old_rows_partly(db: sqlite3.Connection) -> int:
    """The first chunk of a packing that is then killed."""
    with db:
        db.execute("BEGIN")
        rows = db.execute(
            f"SELECT id, asset, ts, sensor_values, score, level, received_at FROM {OLD_TABLE} "
            "ORDER BY id LIMIT 1000"
        ).fetchall()
        db.executemany(INSERT, [_block_of_rows(rows).row()])
        db.execute(f"DELETE FROM {OLD_TABLE} WHERE id <= ?", (rows[-1][0],))
    return len(rows)


def _state(asset: str, seen_at: float, last_ts: float = 1.0) -> AssetState:
    return AssetState(asset, WindowState(b"\x00" * 8, 1, last_ts, seen_at), "{}")


def test_a_restart_restores_at_most_the_newest_assets_and_the_rest_is_deleted(tmp_path: Path):
    """#13: 104,764 assets restored at start took the agent past its memory limit."""
    store = Store(tmp_path)
    store.load_states("m")
    store.commit_batch(Batch(states=[_state(f"a{i}", seen_at=1000.0 + i) for i in range(10)]))
    assert [s.asset for s in store.load_states("m", 3, seen_after=1002.0)] == ["a9", "a8", "a7"]
    assert store.prune_states(keep=3, seen_after=1002.0) == 7
    assert store.prune_states(keep=3, seen_after=1002.0) == 0
    assert sorted(s.asset for s in store.load_states("m")) == ["a7", "a8", "a9"]
    assert store.prune_states(keep=3, seen_after=1008.5) == 2, "idle ones go too"


def test_asset_state_of_an_older_release_counts_as_seen_when_first_opened(tmp_path: Path):
    """No `seen_at` column yet: the upgrade must neither forget every asset nor keep them all."""
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute(
            "CREATE TABLE asset_state (asset TEXT PRIMARY KEY, window_rows BLOB, "
            "window_n INTEGER, last_ts REAL, episode TEXT)"
        )
        db.executemany(
            "INSERT INTO asset_state VALUES (?, ?, 1, ?, '{}')",
            [(f"a{i}", b"\x00" * 8, float(i)) for i in range(5)],
        )
    store = Store(tmp_path)
    now = store.elapsed()  # idleness is measured on the store's elapsed running time
    restored = store.load_states("m", 2, seen_after=now - 1)
    assert [s.asset for s in restored] == ["a4", "a3"], "the latest readings first"
    assert all(0 <= s.window.seen_at <= now for s in restored)


def test_a_reset_deletes_the_state_and_leaves_a_request_for_a_running_agent(tmp_path: Path):
    store = Store(tmp_path)
    store.load_states("m")
    store.commit_batch(Batch(states=[_state("pump-1", 5.0), _state("pump-2", 5.0)]))
    assert reset_asset(tmp_path, "pump-1") is True
    assert reset_asset(tmp_path, "pump-9") is False
    assert [s.asset for s in store.load_states("m")] == ["pump-2"]
    assert store.reset_requests() == ["pump-1"]
    store.forget_assets(["pump-1"])
    assert store.reset_requests() == []


def test_an_idle_store_saves_its_elapsed_time_at_most_once_a_minute(tmp_path: Path):
    """With no commit (no readings) and whatever the alert time to live (0 included, where
    nothing expires), the running time still reaches the database, so a crash of an idle
    agent forgets at most a minute of it."""
    clock = FakeMonotonic(0.0)
    store = Store(tmp_path, monotonic=clock)
    saved = store.get_meta("elapsed_s")
    clock.now += 30
    store.keep_elapsed()
    assert store.get_meta("elapsed_s") == saved, "not due yet: no write"
    clock.now += 31
    store.keep_elapsed()
    assert float(store.get_meta("elapsed_s")) == pytest.approx(61.0)
    store.close()


def _streamed(asset: str, stream: bytes | None) -> AssetState:
    return AssetState(asset, WindowState(b"\x00" * 8, 1, 2.0, 3.0), '{"above": 1}', stream)


def test_stream_states_are_kept_under_their_key_and_dropped_under_another(tmp_path: Path):
    """#15: the layer's state is committed with the window. A model with the same graph but
    other stream parameters (another key) keeps windows and episodes and starts each layer
    anew; another graph drops everything, as before."""
    store = Store(tmp_path)
    store.load_states("graph-a", stream_key="key-1")
    store.commit_batch(Batch(states=[_streamed("p1", b"\x01" * 16), _streamed("p2", None)]))
    store.close()
    again = Store(tmp_path)

    def loaded(graph: str, key: str) -> list[AssetState]:
        return sorted(again.load_states(graph, stream_key=key), key=lambda s: s.asset)

    assert loaded("graph-a", "key-1") == [_streamed("p1", b"\x01" * 16), _streamed("p2", None)]
    assert loaded("graph-a", "key-2") == [_streamed("p1", None), _streamed("p2", None)], (
        "windows and episodes carry on; the layer starts anew"
    )
    again.commit_batch(Batch(states=[_streamed("p1", b"\x02" * 16)]))
    assert loaded("graph-a", "key-2") == [_streamed("p1", b"\x02" * 16), _streamed("p2", None)]
    assert again.load_states("graph-b", stream_key="key-2") == []


def test_asset_state_from_before_the_streaming_layer_gets_a_new_layer(tmp_path: Path):
    """A database of the release before #15: its rows load with no stream state (the pipeline
    starts a new one), and the migrated table takes the new column."""
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute(
            "CREATE TABLE asset_state (asset TEXT PRIMARY KEY, window_rows BLOB, "
            "window_n INTEGER, last_ts REAL, episode TEXT, seen_at REAL)"
        )
        db.execute("INSERT INTO asset_state VALUES ('p1', ?, 1, 2.0, '{\"above\": 1}', 3.0)",
                   (b"\x00" * 8,))  # fmt: skip
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('state_model', 'graph-a')")
    store = Store(tmp_path)
    assert store.load_states("graph-a", stream_key="key-1") == [_streamed("p1", None)]
    store.commit_batch(Batch(states=[_streamed("p1", b"\x03" * 16)]))
    store.close()
    assert Store(tmp_path).load_states("graph-a", stream_key="key-1") == [
        _streamed("p1", b"\x03" * 16)
    ]
