"""Which SQLite errors say the storage (not the statement) is at fault, and the store's two
exceptions."""

from __future__ import annotations

import sqlite3

# Errors that say the storage, not the statement, is at fault (primary result codes): the
# caller keeps what it could not write and tries again. Making room can only help the first two.
_STORAGE_ERRORS = {
    13: "disk or hard cap full",  # SQLITE_FULL
    10: "I/O error",  # SQLITE_IOERR
    8: "database is read-only",  # SQLITE_READONLY: a read-only mount or file (#13 item 9)
    3: "permission denied",  # SQLITE_PERM
    14: "cannot open a database file",  # SQLITE_CANTOPEN (the WAL or shared memory)
}
_ROOM_MAY_HELP = {13, 10}
_CORRUPT_ERRORS = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


class CorruptDatabase(sqlite3.DatabaseError):
    """SQLite opened the file, but its integrity check found damage."""


class StorageUnavailable(RuntimeError):
    """A write could not be committed: for a batch, even after making room and shedding its
    readings."""


def _storage_problem(exc: sqlite3.Error) -> str | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else _STORAGE_ERRORS.get(code & 0xFF)


def _room_may_help(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _ROOM_MAY_HELP


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, CorruptDatabase) or (code is not None and code & 0xFF in _CORRUPT_ERRORS)
