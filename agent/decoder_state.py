"""Decoders whose state must outlive the process: a Sparkplug B source's births and last values.

Without them, the data an edge node sent while the agent was down would be dead letters until
the node rebirthed. The state is written to the database's `meta` (key `decoder_state:<source
name>`) when it changed, at most once per KEEP_S and at stop, and restored at start. It is not
in the batch's transaction: after a crash it may be a second old, which the decoder notices
(a Sparkplug sequence gap) and mends (a rebirth request).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from agent.logs import Throttle
from agent.store.errors import StorageUnavailable

if TYPE_CHECKING:
    from agent.sources.router import Sources
    from agent.store.database import Store

log = logging.getLogger(__name__)

KEEP_S = 1.0


@runtime_checkable
class Stateful(Protocol):
    @property
    def changed(self) -> bool: ...

    def snapshot(self) -> str: ...

    def restore(self, snapshot: str) -> None: ...


class DecoderStates:
    def __init__(self, store: Store, sources: Sources | None) -> None:
        self.store = store
        entries = sources.entries if sources is not None else []
        self.decoders = {
            f"decoder_state:{e.config.name}": e.decoder
            for e in entries
            if isinstance(e.decoder, Stateful)
        }
        self._kept = 0.0
        self._warn = Throttle(log)

    def restore(self) -> None:
        for key, decoder in self.decoders.items():
            kept = self.store.get_meta(key)
            if kept:
                decoder.restore(kept)

    def keep(self, force: bool = False) -> None:
        """After a commit (and at stop, `force`): write what changed."""
        now = time.monotonic()
        if not self.decoders or (not force and now - self._kept < KEEP_S):
            return
        self._kept = now
        for key, decoder in self.decoders.items():
            if not decoder.changed:
                continue
            try:
                self.store.set_meta(key, decoder.snapshot())
            except (StorageUnavailable, sqlite3.Error) as exc:
                self._warn.warning("keep", "cannot keep %s now: %s", key, exc)
