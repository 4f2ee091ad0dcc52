"""The store on real SQLite files: budget and hard cap, expiry, state, corrupt databases."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from agent.alert import Alert
from agent.budget import MIB, Budget
from agent.export import ExportError, export_readings
from agent.readings import INSERT, OLD_TABLE, ReadingBlock, _block_of_rows, stored_readings
from agent.store import _SCHEMA, DB_NAME, AssetState, Batch, Store, open_existing, reset_asset
from agent.window import WindowState

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


def test_expired_alerts_are_counted_and_not_offered_again(tmp_path: Path):
    store = Store(tmp_path)
    store.commit_batch(Batch(alerts=[_alert(1), _alert(2)]))
    assert store.expire(created_before=time.time() + 1) == 2
    assert store.pending(after_seq=0, limit=10) == []
    assert store.stats()["alerts_expired"] == 2


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
    before = time.time()
    store = Store(tmp_path)
    restored = store.load_states("m", 2, seen_after=before - 1)
    assert [s.asset for s in restored] == ["a4", "a3"], "the latest readings first"
    assert all(s.window.seen_at >= before for s in restored)


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
