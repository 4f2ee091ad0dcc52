"""Storage incidents: damage found at open (a corrupt database moved aside, a damaged WAL kept),
remembered in `meta` for the status, the metrics and `buffer stats`. What a damaged WAL or a
corrupt file still gives is `agent.salvage`'s."""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

from agent.isotime import now_iso
from agent.store.core import StoreCore
from agent.store.errors import StorageUnavailable

log = logging.getLogger(__name__)

_INCIDENTS, _INCIDENT_COUNTS = "storage_incidents", "storage_incident_counts"  # meta keys
_INCIDENTS_KEPT = 10


class IncidentMixin(StoreCore):
    """Damage found at open, remembered so that the status and `buffer stats` say so."""

    incidents: list[dict[str, object]]
    incident_counts: dict[str, int]

    def _record_incident(self, kind: str, facts: dict[str, object]) -> None:
        """Remember damage found at open (the last _INCIDENTS_KEPT, and a count by kind, in
        `meta`), for the status, the metrics and `buffer stats`; and log it."""
        incident = {"kind": kind, "at": now_iso(), **facts}
        log.error("storage incident: %s", json.dumps(incident))
        self.incidents = [*self.incidents, incident][-_INCIDENTS_KEPT:]
        self.incident_counts = {**self.incident_counts, kind: self.incident_counts.get(kind, 0) + 1}
        try:
            with self._storage_errors("recording a storage incident"):
                self.set_meta(_INCIDENTS, json.dumps(self.incidents))
                self.set_meta(_INCIDENT_COUNTS, json.dumps(self.incident_counts))
        except StorageUnavailable as exc:
            log.warning("storage incident not recorded in the database (%s)", exc)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _keep_wal(path: Path) -> str | None:
    """Copy a damaged WAL aside before SQLite reuses it: evidence, never deleted."""
    wal, copy = (
        path.with_name(path.name + "-wal"),
        path.with_name(f"{path.name}-wal.damaged-{_stamp()}"),
    )
    try:
        shutil.copyfile(wal, copy)
    except OSError as exc:
        log.warning("cannot keep a copy of the damaged WAL (%s)", exc)
        return None
    return str(copy)


def _move_aside(path: Path) -> Path:
    """Rename the database and its WAL files with a timestamp; never delete evidence."""
    target = path.with_name(f"{path.name}.corrupt-{_stamp()}")
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.rename(target.with_name(target.name + suffix))
    return target
