"""Store stage: readings, the alert outbox, dead letters and the scoring state in one SQLite file.

A micro-batch commits in one transaction: its readings, alerts, dead letters, the window and
episode state of the assets it touched, and the digests of the messages it consumed. The runtime
acknowledges those messages to the local broker only after this commit, so after a crash every
message is either committed (and recognised if redelivered) or redelivered and applied once.

WAL with `synchronous` from config: NORMAL survives a crash of the agent or the OS process
table, FULL also a power cut (each commit waits for fsync). Space is bounded by `Budget`; when
SQLite reports the disk (or the hard cap) full, room is made and the batch retried, and only
then are its readings shed. A database found corrupt at start is moved aside, never deleted.

Modules, one job each; `Store` (`database`) is composed of the mixins that do them:

- `database`: `Store` itself, opening (pragmas, schema, recovery at open) and closing; `DB_NAME`.
- `batch`: what one micro-batch commits (`Batch`, `AssetState`), built by `agent.pipeline`.
- `commit`: `Store.commit_batch` and what it does when space runs out (checkpoint, evict, shed).
- `outbox`: the forwarder's side (`pending`, `mark_delivered`, `expire`; `OutboxItem`).
- `assets`: each asset's scoring state (`load_states`, `prune_states`, `forget_assets`, resets).
- `figures`: the row counts every write keeps; `inspection`: `figures()` and `stats()`.
- `incidents`: damage found at open, moved or copied aside and remembered.
- `schema`: the tables, and the migrations of databases from earlier releases.
- `errors`: `StorageUnavailable`, `CorruptDatabase`, which SQLite errors are the storage's.
- `core`: what the mixins share (connection, lock, figures, elapsed time, `meta`).
- `commands`: what the command line does to a database (`open_existing`, `reset_asset`).
"""

# testbed (and with it tests/test_boundaries.py) reads a running agent's stats through the
# package; everything else imports from the module that does the job.
from agent.store.commands import open_existing

__all__ = ["open_existing"]
