"""What the agent tells about itself: counters, the status document and its heartbeat, systemd's
status line, the metrics snapshot (served on `/metrics`, written to the textfile).

`Telemetry` only reads the other stages (store, upstream session, local session); the runtime
calls `batch_committed` after each commit and `turn` once per turn of its loop, and the upstream
session takes `status` for the retained status document.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.config import AgentConfig, ConfigError, parse_host_port
from agent.drift import summary
from agent.ingest import REASONS
from agent.isotime import now_iso
from agent.logs import Throttle
from agent.metrics import MetricsServer, Snapshot, render, resident_bytes, write_textfile
from agent.notify import Notifier

if TYPE_CHECKING:
    from agent.metrics import Histogram, InboxCounts
    from agent.pipeline import Applied
    from agent.pushes import Desk
    from agent.store.database import Store

log = logging.getLogger(__name__)

_STATUS_LINE_S = 5.0  # how often systemd's STATUS= line is refreshed
_STATUS_INCIDENTS = 3  # the last storage incidents (damage found at open) in the status


@dataclass
class Counters:
    readings: int = 0
    scored: int = 0
    alerts: int = 0
    dead_letters: int = 0
    batches: int = 0
    redelivered: int = 0
    imputed: int = 0
    storage_failures: int = 0
    started_at: float = field(default_factory=time.time)
    alerts_by_level: Counter[str] = field(default_factory=Counter)
    dead_letters_by_reason: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        return (
            f"readings={self.readings} scored={self.scored} alerts={self.alerts} "
            f"dead_letters={self.dead_letters} batches={self.batches} "
            f"redelivered={self.redelivered} imputed={self.imputed} "
            f"storage_failures={self.storage_failures}"
        )


@dataclass
class Links:
    """The parts telemetry reads that are built after it (the upstream session takes
    `status`, so it is built after telemetry)."""

    upstream_connected: Callable[[], bool]
    local_connected: Callable[[], bool]
    inbox_counts: Callable[[], InboxCounts]
    holding: Callable[[], bool]  # a batch is held: the last commit failed
    drifts: Callable[[], dict[str, float]]  # each asset's Stream.drift, where reported
    stream_states_replaced: Callable[[], int]


class Telemetry:
    def __init__(
        self,
        config: AgentConfig,
        store: Store,
        model: dict[str, str],
        sha256: str,
        latency: Histogram,
        notifier: Notifier,
        desk: Desk | None,
    ) -> None:
        self.config = config
        self.store = store
        self.model_info = model
        self.sha256 = sha256
        self.latency = latency
        self.notifier = notifier
        self.desk = desk
        self.counters = Counters()
        self.links: Links | None = None  # see `link`
        self._last_beat = (time.monotonic(), 0, 0)  # for the heartbeat's rates
        self._warn = Throttle(log)
        self._status_line_due = 0.0
        self._textfile_due = 0.0

    def link(self, links: Links) -> None:
        self.links = links

    @property
    def _links(self) -> Links:
        assert self.links is not None, "Telemetry.link comes before the agent starts"
        return self.links

    def turn(self, now: float) -> None:
        """Once per turn of the main loop: a status line for systemd now and then, the
        metrics textfile."""
        if self.notifier.active and now >= self._status_line_due:
            self._status_line_due = now + _STATUS_LINE_S
            self.notifier.status(self.status_line())
        textfile = self.config.metrics.textfile
        if textfile is not None and now >= self._textfile_due:
            self._textfile_due = now + self.config.forward.status_interval_s
            try:
                write_textfile(textfile, render(self.snapshot()))
            except OSError as exc:
                self._warn.warning("textfile", "cannot write metrics to %s: %s", textfile, exc)

    def status_line(self) -> str:
        c = self.counters
        links = (
            f"local {'up' if self._links.local_connected() else 'down'}, "
            f"upstream {'up' if self._links.upstream_connected() else 'down'}"
        )
        storage = "storage ok" if self.storage_healthy() else "STORAGE FAILING"
        return (
            f"{c.readings} readings, {c.alerts} alerts, {c.dead_letters} dead letters; "
            f"{links}; {storage}"
        )

    def metrics_server(self) -> MetricsServer | None:
        """Bound here, so that a port already in use fails the start, not a later scrape."""
        listen = self.config.metrics.listen
        if listen is None:
            return None
        host, port = parse_host_port(listen if ":" in listen else f"127.0.0.1:{listen}")
        try:
            return MetricsServer(host, port, lambda: render(self.snapshot()))
        except OSError as exc:
            raise ConfigError(f"metrics.listen {listen}: {exc.strerror or exc}") from None

    def storage_healthy(self) -> bool:
        """Commits go through and no other storage work (delivery records, expiry) fails."""
        # Also asked before `link`, for the Last Will's document: nothing is held then.
        held = self.links is not None and self.links.holding()
        return not held and self.store.problem() is None

    def snapshot(self) -> Snapshot:
        stats = self.store.figures()
        c = self.counters
        return Snapshot(
            device_id=self.config.device.id,
            model={**self.model_info, "sha256": self.sha256},
            started_at=c.started_at,
            readings=c.readings,
            scored=c.scored,
            batches=c.batches,
            redelivered=c.redelivered,
            imputed=c.imputed,
            storage_failures=c.storage_failures,
            alerts_by_level=dict(c.alerts_by_level),
            dead_letters_by_reason=dict(c.dead_letters_by_reason),
            evictions_by_reason=stats["evictions_by_reason"],
            outbox_pending=stats["alerts_pending"],
            buffered_readings=stats["readings"],
            database_bytes=stats["database_bytes"],
            storage_ok=self.storage_healthy(),
            local_connected=self._links.local_connected(),
            upstream_connected=self._links.upstream_connected(),
            publish_latency=self.latency,
            inbox=self._links.inbox_counts(),
            reasons=REASONS,
            storage_incidents=dict(self.store.incident_counts),
            drift=self._links.drifts(),
            stream_states_replaced=self._links.stream_states_replaced(),
        )

    def status(self) -> dict[str, object]:
        stats = self.store.figures()
        return {
            "device_id": self.config.device.id,
            "model": {**self.model_info, "sha256": self.sha256},
            "storage": "ok" if self.storage_healthy() else "failing",
            "storage_problem": self.store.problem(),
            "storage_incidents": self.store.incidents[-_STATUS_INCIDENTS:],
            "buffer": {
                k: stats[k]
                for k in (
                    "readings",
                    "alerts_pending",
                    "alerts_expired",
                    "dead_letters",
                    "evictions_by_reason",
                    "used_bytes",
                )
            },
            "config_version": 0,
            "last_push": None,
            "recent_pushes": [],
            "groups": list(self.config.fleet.groups),
            "drift": self._drift(),
            **(self.desk.status() if self.desk else {}),
            "last_seen": now_iso(),
            "heartbeat": self._heartbeat(),
        }

    def _drift(self) -> dict[str, object] | None:
        """A summary of fixed size (agent.drift); None before `link` (the Last Will's
        document)."""
        if self.links is None:
            return None
        return summary(self.links.drifts(), self.config.alerts.drift_level)

    def _heartbeat(self) -> dict[str, object]:
        """Rates since the last status, latency and memory: what an operator watches."""
        c, now = self.counters, time.monotonic()
        last_at, last_readings, last_alerts = self._last_beat
        span = max(now - last_at, 1e-3)
        self._last_beat = (now, c.readings, c.alerts)
        return {
            "readings_per_s": round((c.readings - last_readings) / span, 2),
            "alerts_per_s": round((c.alerts - last_alerts) / span, 4),
            "scored": c.scored,
            "dead_letters": c.dead_letters,
            "publish_latency_p50_ms": self.latency.quantile_ms(0.5),
            "publish_latency_p99_ms": self.latency.quantile_ms(0.99),
            "rss_mib": round(resident_bytes() / 2**20, 1),
            "uptime_s": round(time.time() - c.started_at, 1),
        }

    def batch_committed(self, applied: Applied) -> None:
        """Count a committed batch, and warn (throttled) of its dead letters and imputations."""
        batch = applied.batch
        c = self.counters
        c.batches += 1
        c.scored += applied.scored
        c.readings += sum(map(len, batch.readings))
        c.dead_letters += len(batch.dead)
        c.alerts += len(batch.alerts)
        c.alerts_by_level.update(a.level for _topic, a in batch.alerts)
        c.dead_letters_by_reason.update(d.reason for d in batch.dead)
        c.redelivered += applied.copies
        c.imputed += len(applied.imputed)
        for letter in batch.dead:
            self._warn.warning(
                letter.reason,
                "dead letter topic=%s reason=%s detail=%s",
                letter.topic,
                letter.reason,
                letter.detail,
            )
        for readings in applied.imputed:
            self._warn.warning(
                "imputed",
                "imputed training mean asset=%s sensors=%s",
                readings.asset,
                ",".join(readings.imputed),
            )
