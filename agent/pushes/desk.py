"""Fleet pushes on the gateway: which signed pushes to apply, what is running, how to go back.

A push is applied in three steps, each of which can refuse it without touching what runs:
verify (signature by a trusted key, newer than anything seen from that target), check (the
config validates with the same models as a local file; the model loads in ONNX Runtime, has
the running model's sensors and scores a window of its training means), and switch (the files
are written atomically, the state records the new version as pending, and the pipeline
restarts in place between two micro-batches). The new version then has `fleet.health_check_s`
to prove itself; if it does not — or the agent dies before it can — the previous version, kept
as last known good, comes back and the push is reported `rolled_back`.

State lives in `<data_dir>/fleet/`: `state.json`, the pushed config overlays and models by
sha256. A device-level push of a kind overrides group pushes of that kind.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import logging
import os
import time
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from agent.atomic import write_atomically
from agent.config import AgentConfig, ConfigError, load_config, path_keys
from agent.envelope import (
    Envelope,
    PushRejected,
    check_content,
    open_envelope,
)
from agent.isotime import now_iso
from agent.logs import Throttle
from agent.model.score import ORT_RUN_ERRORS, Scorer
from agent.validate import check_runnable, trusted_keys

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
RECENT_PUSHES = 8  # push outcomes kept in the state and the status
# This process, for a trial begun here: a PID repeats (an agent in a container is always PID 1).
PROCESS = f"{os.getpid()}-{uuid.uuid4().hex}"
# Sections a pushed config may not set: they decide whether the device can be reached at all,
# which keys it trusts, and where its data lives.
LOCAL_ONLY = ("device", "local", "upstream", "topics", "fleet", "model")
# What a malformed message can raise on its way through; it is rejected (or ignored), never
# allowed to stop the agent.
_MALFORMED = (ValueError, TypeError, LookupError, OSError, RecursionError)
_MAX_CHUNKS = 100_000
# Top-level keys that are tables; the others (log_level, log_format) are plain values.
SECTIONS = frozenset(
    name
    for name, info in AgentConfig.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
)
KINDS = ("config", "model")
# Chunks of a verified push asked for at a time (each at most MAX_MESSAGE_BYTES on the wire).
_CHUNK_WINDOW = 4
# A rejection is written to state.json at most this often; accepted pushes are written at once.
_SAVE_REJECTIONS_EVERY_S = 10.0


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
class FleetState:
    current: dict[str, Version] = field(default_factory=dict)
    previous: dict[str, Version] = field(default_factory=dict)  # last known good
    seen: dict[str, int] = field(default_factory=dict)  # "<target>/<kind>" -> highest version
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
                seen=dict(doc["seen"]),
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
            if not all(isinstance(v, int | str) for v in state.seen.values()):
                raise ValueError("seen must map streams to versions")
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
            _push_doc(
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
            _push_doc(
                kind, "rolled_back", reason, pending.get("version"), pending.get("target", "")
            )
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


class _Replay(PushRejected):
    """A signed push replayed: older than one already seen, or copied from another target's
    or kind's topic (anyone who reads the topics can do either)."""


@dataclass
class Chunked:
    """A verified envelope waiting for its chunks, which are asked for from `topic`/chunk/<n>
    a few at a time until `deadline` (monotonic)."""

    envelope: Envelope
    stream: str
    topic: str
    deadline: float
    parts: dict[int, bytes] = field(default_factory=dict)
    held: int = 0  # bytes in parts
    first_missing: int = 0

    def wanted(self, window: int) -> list[int]:
        """The first `window` chunk indexes not here yet."""
        while self.first_missing in self.parts:
            self.first_missing += 1
        missing = (
            i for i in range(self.first_missing, self.envelope.chunks) if i not in self.parts
        )
        return list(islice(missing, window))


def stream_of(envelope: Envelope) -> str:
    return f"{envelope.target}/{envelope.kind}"


def join_chunks(waiting: Chunked) -> Envelope | None:
    """The envelope with its content, once every chunk is here (checked against the sha256)."""
    env = waiting.envelope
    if not all(i in waiting.parts for i in range(env.chunks)):
        return None
    content = b"".join(waiting.parts[i] for i in range(env.chunks))
    check_content(content, env.sha256, env.size)
    return Envelope(**{**asdict(env), "content": content})


@dataclass
class Health:
    """What the pipeline saw since a switch, judged at the end of the health check.

    The trial is timed on `clock`, a monotonic one: a wall-clock step (a gateway without RTC
    catching up with NTP) must neither end a trial early nor stretch it (issue 13). A monotonic
    reading means nothing in another process; a trial never outlives the process that began
    it (`recover_interrupted` rolls back one that did).
    """

    started: float  # on `clock`
    duration: float
    clock: Callable[[], float] = time.monotonic
    consuming: bool = False
    windows: int = 0
    critical: int = 0
    not_finite: int = 0

    def observe(self, scores: np.ndarray, levels: list[str | None]) -> None:
        self.windows += len(scores)
        self.not_finite += int(np.count_nonzero(~np.isfinite(scores)))
        self.critical += levels.count("critical")

    def verdict(self, min_windows: int, max_critical: float) -> str | None:
        """None while undecided; "" when healthy; else why not."""
        if self.not_finite:
            return f"the model gave {self.not_finite} non-finite scores"
        if self.windows >= min_windows and self.critical / self.windows > max_critical:
            share = self.critical / self.windows
            return f"critical on {share:.0%} of {self.windows} windows (over {max_critical:.0%})"
        if self.clock() - self.started < self.duration:
            return None
        if not self.consuming:
            return "not consuming readings by the end of the health check"
        return ""


def load_effective(
    path: Path, overrides: dict[str, Any] | None = None, state: FleetState | None = None
) -> AgentConfig:
    """What runs: the local file, the command-line overrides over it, the pushes in `state`
    (default: the saved state) over both (file < command line < pushes)."""
    local = load_config(path, overrides)
    folder = fleet_dir(local.storage.data_dir)
    overlay = (state or FleetState.load(folder)).overlay(folder)
    return load_config(path, overrides, overlay) if overlay else local


@dataclass
class Decision:
    """What became of a push: `switch` to the new state's config now, or just report it."""

    switch: bool
    status: str
    reason: str = ""


class Desk:
    """Takes push messages from the upstream broker, decides, and keeps the fleet state."""

    def __init__(
        self,
        config: AgentConfig,
        source: tuple[Path, dict[str, Any]],
        sensors: list[str],
    ) -> None:
        """`source` is the local config file and command-line overrides, to rebuild from;
        `sensors` are the running model's, which a pushed model must have too."""
        self.config = config
        self.source = source
        self.sensors = sensors
        self.folder = fleet_dir(config.storage.data_dir)
        self.state = FleetState.load(self.folder)
        self.trusted = trusted_keys(config, "config")
        prefix, device = config.topics.prefix, config.device.id
        self.targets = {f"{prefix}/fleet/device/{device}": f"device:{device}"} | {
            f"{prefix}/fleet/group/{g}": f"group:{g}" for g in config.fleet.groups
        }
        # Nothing from a chunk topic is kept before its signed envelope is verified (issue #13:
        # junk chunks held for envelopes that never come exhausted memory); `chunk_topics`
        # then names the chunks to subscribe to, and the broker sends their retained copies.
        self._waiting: dict[str, Chunked] = {}
        self.deferred: list[tuple[str, bytes]] = []  # pushes waiting for a trial to end
        self._warn = Throttle(log)
        self._unsaved = False  # a rejection not yet in state.json
        self._save_due = 0.0  # monotonic

    @property
    def enabled(self) -> bool:
        return bool(self.trusted)

    def subscriptions(self) -> list[str]:
        """The envelope topics only: chunks are subscribed to once their envelope is verified."""
        return [f"{base}/{kind}" for base in self.targets for kind in KINDS] if self.enabled else []

    def chunk_topics(self) -> set[str]:
        """The chunk topics the verified envelopes waiting now need next."""
        return {
            f"{waiting.topic}/chunk/{index}"
            for waiting in self._waiting.values()
            for index in waiting.wanted(_CHUNK_WINDOW)
        }

    def offer(self, topic: str, payload: bytes) -> Decision | None:
        """One message from a push topic; None when there is nothing to report (yet)."""
        parsed = self._parse_topic(topic)
        if parsed is None:
            return None
        target, kind, chunk = parsed
        if chunk is not None:
            try:
                return self._chunk(f"{target}/{kind}", chunk, payload)
            except _MALFORMED as exc:
                return self._reject(kind, target, f"malformed chunk: {exc!r}"[:300], None)
        if not payload:  # a retained push cleared by the operator: what runs stays
            return None
        env: Envelope | None = None
        try:
            env = open_envelope(payload, self.trusted)
            if env.target != target or env.kind not in (kind, "rollback"):
                raise _Replay(f"envelope for {env.target}/{env.kind} on a {kind} topic")
            if self._already_seen(env, kind):
                return None
            self._check_precedence(env, kind)
            if self._on_trial_other_than(kind):
                # Offered again once the trial ends; a retained copy sent again replaces it.
                self.deferred = [d for d in self.deferred if d[0] != topic]
                self.deferred.append((topic, payload))
                return None
            if env.content is None:
                return self._wait_for_chunks(env, f"{target}/{kind}", topic)
            return self._decide(env, kind)
        except _Replay as exc:
            assert env is not None
            return self._reject(kind, target, str(exc), env.version, outcome=False)
        except PushRejected as exc:
            # An envelope that failed verification claims nothing we believe, its version too.
            return self._reject(kind, target, str(exc), env.version if env else None)
        except _MALFORMED as exc:
            return self._reject(
                kind, target, f"malformed push: {exc!r}"[:300], env.version if env else None
            )

    def _on_trial_other_than(self, kind: str) -> bool:
        """One trial at a time: a push of the other kind waits until this one is judged."""
        pending = self.state.pending
        return pending is not None and pending.get("kind") != kind

    def _parse_topic(self, topic: str) -> tuple[str, str, int | None] | None:
        for base, target in self.targets.items():
            if not topic.startswith(base + "/"):
                continue
            parts = topic[len(base) + 1 :].split("/")
            if parts[0] not in KINDS:
                return None
            if len(parts) == 1:
                return target, parts[0], None
            index = parts[2] if len(parts) == 3 and parts[1] == "chunk" else ""
            if index.isascii() and index.isdigit() and int(index[:7]) < _MAX_CHUNKS:
                return target, parts[0], int(index)
        return None

    def _chunk(self, stream: str, index: int, payload: bytes) -> Decision | None:
        """A chunk of a verified envelope waiting for it; anything else is dropped unread."""
        waiting = self._waiting.get(stream)
        if waiting is None or index >= waiting.envelope.chunks or index in waiting.parts:
            return None
        if not payload:
            return None
        try:
            doc = json.loads(payload)
            sha, data = str(doc["sha256"]), base64.b64decode(doc["data"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None  # not one of ours; the sha256 check on joining catches anything wrong
        env = waiting.envelope
        if sha != env.sha256:
            return None
        if waiting.held + len(data) > env.size:
            del self._waiting[stream]
            reason = f"chunks hold more than the signed {env.size} bytes"
            return self._reject(env.kind, env.target, reason, env.version)
        waiting.parts[index] = data
        waiting.held += len(data)
        return self._try_join(stream)

    def _wait_for_chunks(self, env: Envelope, stream: str, topic: str) -> Decision | None:
        """Start asking for the chunks of a verified envelope (see `chunk_topics`)."""
        waiting = self._waiting.get(stream)
        if waiting is not None and (waiting.envelope.version, waiting.envelope.sha256) == (
            env.version,
            env.sha256,
        ):
            return None  # its retained copy again: keep the chunks that came
        if not 0 < env.chunks <= env.size:
            raise PushRejected(f"{env.chunks} chunks cannot hold {env.size} bytes")
        timeout = self.config.fleet.chunk_timeout_s
        self._waiting[stream] = Chunked(env, stream, topic, time.monotonic() + timeout)
        log.info("push %s v%d from %s: fetching %d chunks", env.kind, env.version, env.target,
                 env.chunks)  # fmt: skip
        return None

    def expire(self, now: float) -> Decision | None:
        """Report `incomplete` and free the pushes whose chunks did not all come within
        `fleet.chunk_timeout_s` of their envelope (issue #13); None when there is none."""
        decision = None
        for stream, waiting in list(self._waiting.items()):
            if now < waiting.deadline:
                continue
            del self._waiting[stream]
            env, kind = waiting.envelope, stream.rsplit("/", 1)[1]
            reason = (
                f"{len(waiting.parts)} of {env.chunks} chunks came within "
                f"{self.config.fleet.chunk_timeout_s:.0f}s of the envelope"
            )
            log.warning("push %s v%d from %s incomplete: %s", kind, env.version, env.target,
                        reason)  # fmt: skip
            self.state.record(_push_doc(kind, "incomplete", reason, env.version, env.target))
            self._save_soon()
            decision = Decision(False, "incomplete", reason)
        return decision

    def _try_join(self, stream: str) -> Decision | None:
        waiting = self._waiting[stream]
        kind = stream.rsplit("/", 1)[1]
        try:
            env = join_chunks(waiting)
        except PushRejected as exc:
            del self._waiting[stream]
            return self._reject(kind, waiting.envelope.target, str(exc), waiting.envelope.version)
        if env is None:
            return None
        del self._waiting[stream]
        try:
            return self._decide(env, kind)
        except PushRejected as exc:
            return self._reject(kind, env.target, str(exc), env.version)

    def _already_seen(self, env: Envelope, kind: str) -> bool:
        """A retained push seen before (silently skipped), or a replay of an older one."""
        stream = f"{env.target}/{kind}"
        seen = self.state.seen.get(stream, -1)
        if env.version == seen and self.state.seen.get(f"{stream}#sha") == env.sha256:
            return True
        if env.version <= seen:
            raise _Replay(f"stale: version {env.version} is not newer than {seen}")
        return False

    def _check_precedence(self, env: Envelope, kind: str) -> None:
        current = self.state.current.get(kind)
        if env.target.startswith("group:") and current and current.target.startswith("device:"):
            self._mark_seen(env, kind)
            raise PushRejected(f"a device-level push (v{current.version}) overrides group pushes")

    def _mark_seen(self, env: Envelope, kind: str) -> None:
        stream = f"{env.target}/{kind}"
        self.state.seen[stream] = env.version
        self.state.seen[f"{stream}#sha"] = env.sha256  # type: ignore[assignment]

    def _decide(self, env: Envelope, kind: str) -> Decision:
        """Check the content; on success the state is switched to it, pending its health."""
        self._mark_seen(env, kind)  # authentic: a later replay of it is stale either way
        assert env.content is not None
        candidate = FleetState(
            dict(self.state.current),
            dict(self.state.previous),
            self.state.seen,
            self.state.last_push,
            recent_pushes=self.state.recent_pushes,
        )
        if env.kind == "rollback":
            running = candidate.current.get(kind)
            if running is not None and running.target != env.target:
                raise PushRejected(f"the running {kind} came from {running.target}, not here")
            self._roll_back_in(candidate, kind, env.content)
        else:
            version = Version(env.version, env.sha256, env.target, env.created_at, "")
            version.file = self._store(kind, env.content)
            on_trial = (self.state.pending or {}).get("kind") == kind
            # The last known good stays what it was while a version of this kind is on trial.
            if kind in candidate.current and not on_trial:
                candidate.previous[kind] = candidate.current[kind]
            candidate.current[kind] = version
        self._check(kind, candidate)
        candidate.pending = {
            "kind": kind,
            "since": time.time(),  # for people; the trial is timed on the next
            "monotonic": time.monotonic(),
            "process": PROCESS,
            "version": env.version,
            "target": env.target,
            "rollback": env.kind == "rollback",
        }
        candidate.record(_push_doc(kind, "checking", "", env.version, env.target))
        self.state = candidate
        self.state.save(self.folder)
        log.info("push %s v%d from %s accepted; switching", kind, env.version, env.target)
        return Decision(True, "checking")

    def _roll_back_in(self, state: FleetState, kind: str, content: bytes) -> None:
        try:
            order = json.loads(content)
            wanted, of_kind = order.get("to_version"), order.get("kind")
        except (ValueError, AttributeError):
            raise PushRejected("rollback content must be a JSON object") from None
        if of_kind != kind:
            raise PushRejected(f"a rollback of {of_kind!r} on a {kind} topic")
        if wanted is not None and type(wanted) is not int:
            raise PushRejected("to_version must be an integer")
        before = state.previous.get(kind)
        if before is None and kind not in state.current:
            raise PushRejected(f"no pushed {kind} to roll back")
        if wanted is not None and (before is None or before.version != wanted):
            kept = f"v{before.version}" if before else "none"
            raise PushRejected(f"cannot roll back to v{wanted}: the last known good is {kept}")
        now = state.current.pop(kind)
        if before is not None:
            state.current[kind] = before
        state.previous[kind] = now

    def _store(self, kind: str, content: bytes) -> str:
        name = f"{kind}-{hashlib.sha256(content).hexdigest()[:16]}"
        name += ".toml" if kind == "config" else ".onnx"
        write_atomically(self.folder / name, content)
        return name

    def _check(self, kind: str, candidate: FleetState) -> None:
        """The same checks a local config and model get (`check_runnable`, as `check-config`
        and `run`), plus, for a model, the running model's sensors and a smoke score."""
        if kind == "config" and "config" in candidate.current:
            text = (self.folder / candidate.current["config"].file).read_text()
            try:
                check_overlay(tomllib.loads(text))
            except tomllib.TOMLDecodeError as exc:
                raise PushRejected(f"config is not valid TOML: {exc}") from None
        try:
            config = load_effective(*self.source, candidate)
            scorer = check_runnable(config, f"pushed {kind}")
        except ConfigError as exc:
            raise PushRejected(str(exc).replace("\n", " ")) from None
        if kind == "model":
            smoke_score(scorer, self.sensors)

    def _reject(
        self, kind: str, target: str, reason: str, version: int | None, outcome: bool = True
    ) -> Decision:
        # Anyone can publish here: one line per stream per 10 s, not one per message.
        self._warn.warning(
            f"rejected {target}/{kind}", "push %s from %s rejected: %s", kind, target, reason
        )
        self.state.record(_push_doc(kind, "rejected", reason, version, target), outcome)
        self._save_soon()
        return Decision(False, "rejected", reason)

    def _save_soon(self) -> None:
        """A rejection or an incomplete push goes to state.json at most once per
        `_SAVE_REJECTIONS_EVERY_S` (issue #13: two fsyncs per unsigned message stalled the
        agent); the status reports it meanwhile."""
        self._unsaved = True
        self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        """Between batches: write what `_save_soon` held back, once it is due."""
        if self._unsaved and now >= self._save_due:
            self.flush()

    def flush(self) -> None:
        """Write a held-back record now (at shutdown, or when due)."""
        if not self._unsaved:
            return
        self._unsaved = False
        self._save_due = time.monotonic() + _SAVE_REJECTIONS_EVERY_S
        try:
            self.state.save(self.folder)
        except OSError as exc:  # a full disk: the rejection is still reported upstream
            log.error("cannot save the fleet state: %s", exc)

    # -- after the switch ---------------------------------------------------------------------

    def passed(self) -> None:
        self.state.passed()
        self.state.save(self.folder)
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        """Pushed files no longer current or last known good go (models are MBs each)."""
        kept = {v.file for v in (*self.state.current.values(), *self.state.previous.values())}
        for path in self.folder.glob("*-*.*"):
            if path.name not in kept and path.suffix in (".toml", ".onnx"):
                path.unlink(missing_ok=True)

    def roll_back(self, reason: str) -> None:
        self.state.roll_back(reason)
        self.state.save(self.folder)

    def status(self) -> dict[str, Any]:
        config = self.state.current.get("config")
        return {
            "config_version": config.version if config else 0,
            "last_push": self.state.last_push,
            "recent_pushes": self.state.recent_pushes,
            "groups": list(self.config.fleet.groups),
        }


def smoke_score(scorer: Scorer, sensors: list[str]) -> None:
    """The pushed model fits this gateway and scores a window of its training means."""
    m = scorer.manifest
    if m.sensor_names != sensors:
        raise PushRejected(f"model sensors {m.sensor_names} differ from the running {sensors}")
    window = np.tile(np.array([s.mean for s in m.sensors]), (1, m.window, 1))
    try:
        score = scorer.score_many(window).score
    except ORT_RUN_ERRORS as exc:
        raise PushRejected(f"model failed to score a window: {exc}") from None
    if not (np.all(np.isfinite(score)) and np.all((score >= 0) & (score <= 1))):
        raise PushRejected(f"model scored {score.tolist()} on its training means, not in [0, 1]")


def _push_doc(
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
        state.record(_push_doc(kind, "rolled_back", reason, failed.version, failed.target))
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


def recover_interrupted(data_dir: Path) -> bool:
    """At start: a switch whose health check another process began and never finished (it
    died, or the machine did) failed it. Roll back before anything loads; True if it did."""
    pending = FleetState.load(fleet_dir(data_dir)).pending
    if pending is None or pending.get("process") == PROCESS:
        return False
    return abandon_pending(data_dir, "the agent stopped during the health check")


def abandon_pending(data_dir: Path, reason: str) -> bool:
    """The version on trial failed before it could be judged: roll it back now."""
    folder = fleet_dir(data_dir)
    state = FleetState.load(folder)
    if state.pending is None:
        return False
    state.roll_back(reason)
    state.save(folder)
    return True
