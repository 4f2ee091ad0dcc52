"""Prometheus text metrics: served on a loopback HTTP port and/or written as a textfile.

The agent hands over a `Snapshot` of what it counts; this module only formats and serves it,
so a scrape never touches the pipeline's state directly. The HTTP server answers GET /metrics
and nothing else.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from agent.atomic import write_atomically

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class Histogram:
    """Cumulative buckets, a sum and a count, as Prometheus histograms are."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._counts = [0] * len(bounds)
        self._sum = 0.0
        self._count = 0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._sum += value
            self._count += 1
            for i, bound in enumerate(self.bounds):
                if value <= bound:
                    self._counts[i] += 1

    def quantile_ms(self, q: float) -> float | None:
        """The upper bound (ms) of the bucket holding quantile `q`; None before any sample."""
        with self._lock:
            counts, count = list(self._counts), self._count
        if not count:
            return None
        for bound, n in zip(self.bounds, counts, strict=True):
            if n >= q * count:
                return bound * 1000
        return None  # beyond the last bucket

    def lines(self, name: str) -> Iterator[str]:
        with self._lock:
            counts, total, count = list(self._counts), self._sum, self._count
        for bound, n in zip(self.bounds, counts, strict=True):
            yield f'{name}_bucket{{le="{bound}"}} {n}'
        yield f'{name}_bucket{{le="+Inf"}} {count}'
        yield f"{name}_sum {total:.6f}"
        yield f"{name}_count {count}"


@dataclass(frozen=True)
class InboxCounts:
    """Messages received and not yet taken by the pipeline, and how often that bound held."""

    messages: int
    bytes: int
    peak_messages: int
    full: int


@dataclass
class Snapshot:
    """What the agent reports; counters are since the process started unless said otherwise."""

    device_id: str
    model: Mapping[str, str]
    started_at: float
    readings: int
    scored: int
    batches: int
    redelivered: int
    imputed: int
    storage_failures: int
    alerts_by_level: Mapping[str, int]
    dead_letters_by_reason: Mapping[str, int]
    evictions_by_reason: Mapping[str, int]  # kept in the database: across restarts
    outbox_pending: int
    buffered_readings: int
    database_bytes: int
    storage_ok: bool
    local_connected: bool
    upstream_connected: bool
    publish_latency: Histogram
    inbox: InboxCounts
    levels: tuple[str, ...] = ("info", "warning", "critical")
    reasons: tuple[str, ...] = field(default_factory=tuple)
    storage_incidents: Mapping[str, int] = field(default_factory=dict)  # across restarts
    drift: Mapping[str, float] = field(default_factory=dict)  # by asset, those reporting it
    stream_states_replaced: int = 0


def render(s: Snapshot) -> str:
    out: list[str] = []

    def metric(name: str, kind: str, text: str, samples: Mapping[str, float]) -> None:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples.items():
            out.append(f"{name}{labels} {value}")

    def by(label: str, values: Mapping[str, int], keys: tuple[str, ...]) -> dict[str, float]:
        every = dict.fromkeys(keys, 0) | dict(values)
        return {f'{{{label}="{_escape(k)}"}}': v for k, v in sorted(every.items())}

    info = {"device_id": s.device_id, **s.model}
    labels = ",".join(f'{k}="{_escape(str(v))}"' for k, v in info.items())
    metric("edge_agent_model_info", "gauge", "The model being run (labels).", {f"{{{labels}}}": 1})
    metric(
        "edge_agent_start_time_seconds", "gauge", "Process start, unix seconds.", {"": s.started_at}
    )
    metric("edge_agent_readings_total", "counter", "Readings stored.", {"": s.readings})
    metric("edge_agent_scored_total", "counter", "Windows scored.", {"": s.scored})
    metric("edge_agent_batches_total", "counter", "Micro-batches committed.", {"": s.batches})
    metric(
        "edge_agent_redelivered_total",
        "counter",
        "Messages recognised as copies of ones already applied.",
        {"": s.redelivered},
    )
    metric(
        "edge_agent_imputed_total",
        "counter",
        "Readings with a missing sensor imputed.",
        {"": s.imputed},
    )
    metric(
        "edge_agent_storage_failures_total",
        "counter",
        "Batches held back because storage failed.",
        {"": s.storage_failures},
    )
    metric(
        "edge_agent_alerts_total",
        "counter",
        "Alerts raised, by level.",
        by("level", s.alerts_by_level, s.levels),
    )
    metric(
        "edge_agent_dead_letters_total",
        "counter",
        "Rejected input, by reason.",
        by("reason", s.dead_letters_by_reason, s.reasons),
    )
    metric(
        "edge_agent_evictions_total",
        "counter",
        "Rows evicted or shed for space, by reason (kept across restarts).",
        by("reason", s.evictions_by_reason, ()),
    )
    metric(
        "edge_agent_outbox_pending",
        "gauge",
        "Alerts not yet delivered upstream.",
        {"": s.outbox_pending},
    )
    metric(
        "edge_agent_buffered_readings",
        "gauge",
        "Readings in the database.",
        {"": s.buffered_readings},
    )
    metric("edge_agent_database_bytes", "gauge", "Database file plus WAL.", {"": s.database_bytes})
    metric(
        "edge_agent_storage_ok",
        "gauge",
        "1 unless storage is failing (disk full or read-only, I/O): commits, delivery "
        "records or expiry.",
        {"": int(s.storage_ok)},
    )
    metric(
        "edge_agent_storage_incidents_total",
        "counter",
        "Damage found when the database was opened, by kind: a corrupt file moved aside "
        "(what could be read was salvaged) or a damaged WAL whose commits SQLite discarded "
        "(kept across restarts).",
        by("kind", s.storage_incidents, ("corrupt", "wal_damaged")),
    )
    metric(
        "edge_agent_score_drift",
        "gauge",
        "How far the asset's recent raw scores have moved from training, 0 to 1 (assets whose "
        "model reports it).",
        {f'{{asset="{_escape(a)}"}}': round(d, 6) for a, d in sorted(s.drift.items())},
    )
    metric(
        "edge_agent_stream_states_replaced_total",
        "counter",
        "Saved stream states that did not load at start (corrupt or another model's) and "
        "started afresh.",
        {"": s.stream_states_replaced},
    )
    metric(
        "edge_agent_broker_connected",
        "gauge",
        "1 while connected, by broker.",
        {
            '{broker="local"}': int(s.local_connected),
            '{broker="upstream"}': int(s.upstream_connected),
        },
    )
    metric(
        "edge_agent_inbox_messages",
        "gauge",
        "Messages received from the local broker, not yet taken by the pipeline.",
        {"": s.inbox.messages},
    )
    metric("edge_agent_inbox_bytes", "gauge", "Their payload bytes.", {"": s.inbox.bytes})
    metric(
        "edge_agent_inbox_peak_messages",
        "gauge",
        "The most messages the inbox has held at once.",
        {"": s.inbox.peak_messages},
    )
    metric(
        "edge_agent_inbox_full_total",
        "counter",
        "Times the inbox was full and the MQTT thread waited for the pipeline.",
        {"": s.inbox.full},
    )
    metric(
        "edge_agent_resident_memory_bytes", "gauge", "Resident set size.", {"": resident_bytes()}
    )
    out.append("# HELP edge_agent_publish_latency_seconds Alert publish to PUBACK upstream.")
    out.append("# TYPE edge_agent_publish_latency_seconds histogram")
    out.extend(s.publish_latency.lines("edge_agent_publish_latency_seconds"))
    return "\n".join(out) + "\n"


def resident_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def write_textfile(path: Path, text: str) -> None:
    """Replace the file atomically, so node_exporter never reads half of it."""
    write_atomically(path, text.encode())


class MetricsServer:
    """GET /metrics on `host:port`, served one request at a time by a daemon thread."""

    def __init__(self, host: str, port: int, page: Callable[[], str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # a client that stalls is dropped, not waited for

            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = page().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("metrics %s", format % args)

        # One request at a time: a scrape is small, and no number of idle clients can take
        # the service's threads (the unit allows 64 tasks).
        self.server = HTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for a serve loop that must be running
            self.server.shutdown()
        self.server.server_close()
