"""What runs: the local config with the pushes over it, and what a pushed config may set."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.config import AgentConfig, ConfigError, load_config, path_keys
from agent.envelope import PushRejected
from agent.pushes.state import FleetState, fleet_dir, push_doc
from agent.validate import check_runnable

# Sections a pushed config may not set: they decide whether the device can be reached at all,
# which keys it trusts, and where its data lives.
LOCAL_ONLY = ("device", "local", "upstream", "topics", "fleet", "model")

# Top-level keys that are tables; the others (log_level, log_format) are plain values.
SECTIONS = frozenset(
    name
    for name, info in AgentConfig.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
)


def check_overlay(raw: dict[str, Any]) -> None:
    """A pushed config may tune the agent, not cut it off, change whom it trusts or name files
    on the device. The first problem named is the one that matters: a copy of a whole local
    config is refused for its local sections, not for the shape of its first key."""
    local = [f"[{section}]" for section in LOCAL_ONLY if section in raw]
    if local:
        where = "it stays" if len(local) == 1 else "they stay"
        raise PushRejected(f"{', '.join(local)} cannot be pushed; {where} in the local config")
    for section, value in raw.items():
        if section in SECTIONS and not isinstance(value, dict):
            raise PushRejected(f"{section} must be a [{section}] table")
    for dotted in path_keys():
        if _has_dotted(raw, dotted):
            # A push naming a path could aim the agent's writes at its own database (issue 13).
            raise PushRejected(f"{dotted} cannot be pushed: a push may not name files")
    _check_pushed_listen(raw.get("metrics", {}).get("listen"))


def _check_pushed_listen(listen: object) -> None:
    """A push may move /metrics to another port of the loopback interface, not open it to the
    network: what a gateway exposes beyond itself is decided on the gateway."""
    if not isinstance(listen, str) or ":" not in listen:
        return  # a port alone binds 127.0.0.1; other types fail the schema
    host = listen.rsplit(":", 1)[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise PushRejected(
            f"metrics.listen {listen!r} cannot be pushed: a push may only bind /metrics to "
            "loopback (a port, or 127.0.0.1:PORT); other addresses stay in the local config"
        )


def _has_dotted(raw: dict[str, Any], dotted: str) -> bool:
    node: Any = raw
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def load_effective(
    path: Path, overrides: dict[str, Any] | None = None, state: FleetState | None = None
) -> AgentConfig:
    """What runs: the local file, the command-line overrides over it, the pushes in `state`
    (default: the saved state) over both (file < command line < pushes)."""
    local = load_config(path, overrides)
    folder = fleet_dir(local.storage.data_dir)
    overlay = (state or FleetState.load(folder)).overlay(folder)
    return load_config(path, overrides, overlay) if overlay else local


def discard_invalid(
    path: Path, overrides: dict[str, Any], save: bool
) -> tuple[FleetState, list[str]]:
    """At start: pushed versions that today's checks refuse (accepted by an older agent, such
    as issue 13's `metrics.textfile` at the database) are set aside, newest first, for the last
    known good or the local config: the agent starts and reports why instead of crash-looping.
    The state `run` would use, and what was set aside; `save` False (check-config) only says."""
    local = load_config(path, overrides)
    folder = fleet_dir(local.storage.data_dir)
    state = FleetState.load(folder)
    dropped: list[str] = []
    if not state.current:
        return state, dropped
    problem = _refusal(path, overrides, state)
    if problem is None or _refusal(path, overrides, FleetState()) is not None:
        return state, dropped  # fine, or the local config's own fault: reported as such
    while problem is not None and state.current:
        kind = "config" if "config" in state.current else "model"
        failed = state.current.pop(kind)
        before = state.previous.pop(kind, None)
        if before is not None:
            state.current[kind] = before
        if (state.pending or {}).get("kind") == kind:
            state.pending = None
        reason = f"no longer passes the checks: {problem}"
        state.record(push_doc(kind, "rolled_back", reason, failed.version, failed.target))
        dropped.append(f"pushed {kind} v{failed.version} set aside: {problem}")
        problem = _refusal(path, overrides, state)
    if save:
        state.save(folder)
    return state, dropped


def _refusal(path: Path, overrides: dict[str, Any], state: FleetState) -> str | None:
    """Why `state`'s pushes over the local config would be refused as a push now, if so (the
    checks in the order a push gets them)."""
    try:
        if "config" in state.current:
            folder = fleet_dir(load_config(path, overrides).storage.data_dir)
            check_overlay(tomllib.loads((folder / state.current["config"].file).read_text()))
        check_runnable(load_effective(path, overrides, state), path)
    except (ConfigError, PushRejected, tomllib.TOMLDecodeError) as exc:
        return str(exc).replace("\n", " ")
    return None
