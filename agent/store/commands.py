"""What the command line does to a data dir's database, beside a running agent or without one:
open it for inspection, reset an asset."""

from __future__ import annotations

import time
from pathlib import Path

from agent.store.database import DB_NAME, Store


def reset_asset(data_dir: str | Path, asset: str) -> bool:
    """Delete one asset's window and episode, and ask a running agent to drop its copy (it
    looks between batches, at least once a second; a stopped one at its next start). False
    when the asset had no state."""
    store = open_existing(data_dir)
    try:
        with store._storage_errors("resetting an asset"), store._lock, store.conn:
            store.conn.execute("BEGIN IMMEDIATE")
            found = store.conn.execute("DELETE FROM asset_state WHERE asset = ?", (asset,))
            if found.rowcount:
                store.conn.execute(
                    "INSERT OR REPLACE INTO asset_resets (asset, requested_at) VALUES (?, ?)",
                    (asset, time.time()),
                )
        return bool(found.rowcount)
    finally:
        store.close()


def open_existing(data_dir: str | Path) -> Store:
    """Open a data dir's database for inspection; fail clearly instead of creating one."""
    path = Path(data_dir) / DB_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no agent database at {path}")
    return Store(data_dir, recover=False)
