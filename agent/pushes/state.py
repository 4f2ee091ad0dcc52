"""The fleet state a gateway keeps in `<data_dir>/fleet/state.json`: what runs (current),
what to go back to (previous, the last known good), the highest version seen per stream
(replay protection), the version on trial (pending) and the last few push outcomes."""

from __future__ import annotations

import json
import logging
import os
import time
import tomllib
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.atomic import write_atomically
from agent.isotime import now_iso

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
RECENT_PUSHES = 8  # push outcomes kept in the state and the status
# This process, for a trial begun here: a PID repeats (an agent in a container is always PID 1).
PROCESS = f"{os.getpid()}-{uuid.uuid4().hex}"


def fleet_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "fleet"


@dataclass
class Version:
    """One pushed version of a kind, as kept on disk."""

    version: int
    sha256: str
    target: str
    created_at: str
    file: str  # inside the fleet folder


@dataclass
class SeenVersion:
    """The newest authentic push of a stream (`<target>/<kind>`): a retained copy of it is
    skipped silently, anything not newer is a replay."""

    version: int
    sha256: str  # "" when not known (a state saved before hashes were kept)


@dataclass
class FleetState:
    current: dict[str, Version] = field(default_factory=dict)
    previous: dict[str, Version] = field(default_factory=dict)  # last known good
    seen: dict[str, SeenVersion] = field(default_factory=dict)  # by "<target>/<kind>"
    last_push: dict[str, Any] | None = None
    pending: dict[str, Any] | None = None  # {kind, since, process, ...}: on trial
    # The last few outcomes, newest last: a later push's report cannot hide an earlier one's
    # (issue 13: a rollback's reason was overwritten by a group rejection before upstream saw it).
    recent_pushes: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Path) -> FleetState:
        """The saved state; a damaged one (or one naming files that are gone) is moved aside
        and the agent runs on its local config, which it reports, rather than not at all."""
        path = folder / STATE_FILE
        if not path.exists():
            return cls()
        try:
            doc = json.loads(path.read_text())
            state = cls(
                current={k: Version(**v) for k, v in doc["current"].items()},
                previous={k: Version(**v) for k, v in doc["previous"].items()},
                seen=_load_seen(doc["seen"]),
                last_push=doc["last_push"],
                pending=doc["pending"],
                recent_pushes=list(doc.get("recent_pushes", []))[-RECENT_PUSHES:],
            )
            if not isinstance(state.pending, dict | None) or not isinstance(
                state.last_push, dict | None
            ):
                raise ValueError("pending and last_push must be objects or null")
            if not all(isinstance(p, dict) for p in state.recent_pushes):
                raise ValueError("recent_pushes must be a list of objects")
            missing = [v.file for v in state.current.values() if not (folder / v.file).is_file()]
            if missing:
                raise ValueError(f"pushed files missing: {', '.join(missing)}")
            for kind, version in list(state.previous.items()):
                if not (folder / version.file).is_file():
                    log.error(
                        "last known good %s v%d is gone (%s)", kind, version.version, version.file
                    )
                    del state.previous[kind]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = path.with_name(f"{STATE_FILE}.damaged-{int(time.time())}")
            try:
                os.replace(path, aside)
            except OSError as move_failed:
                aside = Path(f"(could not move it: {move_failed})")
            log.error("fleet state %s unusable (%s); moved to %s, running the local config",
                      path, exc, aside)  # fmt: skip
            return cls()
        return state

    def save(self, folder: Path) -> None:
        write_atomically(folder / STATE_FILE, json.dumps(asdict(self), indent=1).encode())

    def record(self, doc: dict[str, Any], outcome: bool = True) -> None:
        """A push's report: the last one, and, once it is the outcome of a verified push, one
        of the recent (a flood of unsigned junk must not push a rollback's reason out, nor
        replays of signed pushes, which anyone who reads the topics can capture: not an
        `outcome`)."""
        self.last_push = doc
        if outcome and doc["status"] != "checking" and doc["version"] is not None:
            self.recent_pushes = [*self.recent_pushes, doc][-RECENT_PUSHES:]

    def passed(self) -> None:
        """The pending version proved healthy: it is the last known good now."""
        pending = self.pending or {}
        self.pending = None
        rollback = bool(pending.get("rollback"))
        self.record(
            push_doc(
                pending.get("kind", "?"),
                "rolled_back" if rollback else "applied",
                "rolled back by the operator" if rollback else "",
                pending.get("version"),
                pending.get("target", ""),
            )
        )
        log.info("push %s v%s healthy: applied", pending.get("kind"), pending.get("version"))

    def roll_back(self, reason: str) -> None:
        """The pending version failed: back to the previous one (or the local config)."""
        pending = self.pending or {}
        kind = pending.get("kind", "config")
        failed = self.current.pop(kind, None)
        before = self.previous.pop(kind, None)
        if before is not None:
            self.current[kind] = before
        if failed is not None and pending.get("rollback"):
            self.previous[kind] = failed
        self.pending = None
        self.record(
            push_doc(kind, "rolled_back", reason, pending.get("version"), pending.get("target", ""))
        )
        log.error("push %s v%s rolled back: %s", kind, pending.get("version"), reason)

    def overlay(self, folder: Path) -> dict[str, Any]:
        """The raw config the pushes add to the local file."""
        raw: dict[str, Any] = {}
        if "config" in self.current:
            raw = tomllib.loads((folder / self.current["config"].file).read_text())
        if "model" in self.current:
            raw["model"] = {"path": str(folder / self.current["model"].file)}
        return raw


def _load_seen(doc: object) -> dict[str, SeenVersion]:
    """`seen` as saved ({stream: {version, sha256}}), or as agents before issue 14 saved it:
    the version under the stream and its hash under `<stream>#sha`. Both are read, so that a
    gateway upgrading keeps its replay protection; a save writes the new layout."""
    if not isinstance(doc, dict):
        raise ValueError("seen must be an object")
    seen: dict[str, SeenVersion] = {}
    for stream, value in doc.items():
        if stream.endswith("#sha"):
            continue  # read with its stream below
        if isinstance(value, dict):
            version, sha256 = value.get("version"), value.get("sha256")
        else:
            version, sha256 = value, doc.get(f"{stream}#sha", "")
        if type(version) is not int or not isinstance(sha256, str):
            raise ValueError(f"seen {stream!r} must hold a version and its sha256")
        seen[stream] = SeenVersion(version, sha256)
    return seen


def push_doc(
    kind: str, status: str, reason: str, version: int | None, target: str
) -> dict[str, Any]:
    return {
        "kind": kind,
        "status": status,
        "reason": reason,
        "version": version,
        "target": target,
        "at": now_iso(),
    }
