"""`edge-agent doctor`: check a gateway the way the agent will use it, and say how to fix what
is wrong. Each check is independent; a later one is skipped only when it needs what an earlier
one could not provide (no brokers to try without a config)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from agent.config import AgentConfig, BrokerConfig, ConfigError, load_config
from agent.connection import mqtt_problem, password, tls_context
from agent.model.manifest import ModelFileError
from agent.model.score import Scorer
from agent.store.commands import open_existing
from agent.store.database import DB_NAME

_MIN_FREE_BYTES = 64 * 1024 * 1024
_EARLIEST_SANE = datetime(2025, 1, 1).timestamp()  # before this release: the clock is unset
_NTP_SYNCED = Path("/run/systemd/timesync/synchronized")
_CHRONY = Path("/run/chrony/chronyd.pid")  # chrony instead of systemd-timesyncd


@dataclass
class Finding:
    status: Literal["ok", "warn", "FAIL"]
    check: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4} {self.check}: {self.detail}"
        return text + (f"\n     fix: {self.fix}" if self.fix else "")


def diagnose(path: Path, overrides: dict[str, object]) -> Iterator[Finding]:
    try:
        config = load_config(path, overrides)
    except ConfigError as exc:
        yield Finding(
            "FAIL", "config", str(exc), f"edit {path}; `edge-agent check-config` re-checks"
        )
        return
    yield Finding("ok", "config", f"{path} is valid (device {config.device.id})")
    yield from _model(config)
    for name in ("local", "upstream"):
        yield _broker(name, getattr(config, name), config.device.id)
    yield from _storage(config)
    yield _clock()


def _model(config: AgentConfig) -> Iterator[Finding]:
    try:
        scorer = Scorer.load(config.model.path)
    except ModelFileError as exc:
        yield Finding(
            "FAIL", "model", str(exc), "point model.path at an .onnx file from edge-trainer"
        )
        return
    m = scorer.manifest
    yield Finding(
        "ok",
        "model",
        f"{m.model_id} v{m.version} ({m.algorithm.name}, {len(m.sensors)} sensors, window "
        f"{m.window}) loads in ONNX Runtime",
    )


def _broker(name: str, broker: BrokerConfig, device: str) -> Finding:
    check = f"broker {name} ({broker.host}:{broker.port}{', TLS' if broker.tls else ''})"
    try:
        password(broker)
        if broker.tls is not None:
            tls_context(broker.tls)
    except ConfigError as exc:
        return Finding("FAIL", check, str(exc), f"fix {name}.password_file / {name}.tls")
    problem = mqtt_problem(broker, f"edge-agent-{device}-doctor")
    if problem is None:
        return Finding("ok", check, "reachable and accepts the agent's login")
    return Finding("FAIL", check, problem, _broker_fix(name, problem))


def _broker_fix(name: str, problem: str) -> str:
    if "cannot reach" in problem:
        if name == "local":
            return "is mosquitto running? `systemctl status mosquitto`; check local.host/port"
        return f"check {name}.host/port, DNS and the firewall; the agent buffers meanwhile"
    if "certificate" in problem or "TLS" in problem:
        return (
            f"{name}.tls.ca_file must hold the CA that signed the broker's certificate, and "
            f"{name}.host must be a name in that certificate"
        )
    if "refused" in problem:
        return f"check {name}.username and the password in {name}.password_file / password_env"
    return f"check {name} in the config and the broker's log"


def _storage(config: AgentConfig) -> Iterator[Finding]:
    folder = config.storage.data_dir
    existing = folder if folder.exists() else next(p for p in folder.parents if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        yield Finding(
            "FAIL",
            "storage",
            f"{existing} is not writable by this user",
            "run doctor as the service user (sudo -u edge-agent ...) or fix storage.data_dir",
        )
        return
    free = shutil.disk_usage(existing).free
    if free < _MIN_FREE_BYTES:
        yield Finding(
            "FAIL",
            "disk",
            f"{free // 2**20} MiB free on {existing}",
            "free space, or lower storage.max_bytes; the agent sheds readings on a full disk",
        )
    else:
        used = _used(folder)
        room = "" if free + used >= config.storage.max_bytes else " (less than storage.max_bytes)"
        status = "warn" if room else "ok"
        yield Finding(status, "disk", f"{free // 2**20} MiB free on {existing}{room}")
    if (folder / DB_NAME).exists():
        try:
            store = open_existing(folder)
        except sqlite3.DatabaseError as exc:
            yield Finding(
                "FAIL",
                "database",
                f"{folder / DB_NAME}: {exc}",
                "the agent moves a corrupt database aside by itself at its next start",
            )
            return
        try:
            stats = store.stats()
        finally:
            store.close()
        yield Finding(
            "ok",
            "database",
            f"{stats['readings']} readings, {stats['alerts_pending']} alerts pending, "
            f"{stats['database_bytes'] // 1024} KiB",
        )
        if incidents := stats["storage_incidents"]:
            last = incidents[-1]
            yield Finding(
                "warn",
                "database history",
                f"{len(incidents)} storage incident(s), the last {last['kind']} at "
                f"{last['at']}: {last.get('detail', '')}",
                "check the disk (SD card wear, power supply); the files kept beside "
                "agent.db are evidence",
            )


def _used(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob(f"{DB_NAME}*")) if folder.exists() else 0


def _clock() -> Finding:
    now = time.time()
    if now < _EARLIEST_SANE:
        return Finding(
            "FAIL",
            "clock",
            f"system time {datetime.fromtimestamp(now).isoformat()} is before 2025",
            "set the time and enable NTP: `timedatectl set-ntp true` (a Pi has no RTC)",
        )
    if _CHRONY.exists():
        return Finding("ok", "clock", "chronyd is running (its sync is not checked here)")
    if Path("/run/systemd").exists() and not _NTP_SYNCED.exists():
        return Finding(
            "warn",
            "clock",
            "not synchronised by systemd-timesyncd (alert times may drift)",
            "`timedatectl set-ntp true`, and allow NTP through the firewall",
        )
    return Finding(
        "ok", "clock", datetime.fromtimestamp(now).astimezone().isoformat("T", "seconds")
    )
