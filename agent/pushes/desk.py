"""The push desk: takes push messages from the upstream broker, verifies and checks them,
decides, and keeps the fleet state."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.atomic import write_atomically
from agent.config import AgentConfig, ConfigError
from agent.envelope import Envelope, PushRejected, open_envelope
from agent.logs import Throttle
from agent.model.score import ORT_RUN_ERRORS, Scorer
from agent.pushes.chunks import MAX_CHUNKS, ChunksRefused, Reassembly
from agent.pushes.compose import check_overlay, load_effective
from agent.pushes.state import PROCESS, FleetState, SeenVersion, Version, fleet_dir, push_doc
from agent.validate import check_runnable, trusted_keys

log = logging.getLogger(__name__)

# What a malformed message can raise on its way through; it is rejected (or ignored), never
# allowed to stop the agent.
_MALFORMED = (ValueError, TypeError, LookupError, OSError, RecursionError)
KINDS = ("config", "model")
# A rejection is written to state.json at most this often; accepted pushes are written at once.
_SAVE_REJECTIONS_EVERY_S = 10.0


class _Replay(PushRejected):
    """A signed push replayed: older than one already seen, or copied from another target's
    or kind's topic (anyone who reads the topics can do either)."""


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
        # `chunk_topics` names the chunks of verified envelopes to subscribe to, and the
        # broker sends their retained copies.
        self._chunks = Reassembly(config.fleet.chunk_timeout_s)
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
        return self._chunks.topics()

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
                self._chunks.start(env, f"{target}/{kind}", topic, time.monotonic())
                return None
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
            if index.isascii() and index.isdigit() and int(index[:7]) < MAX_CHUNKS:
                return target, parts[0], int(index)
        return None

    def _chunk(self, stream: str, index: int, payload: bytes) -> Decision | None:
        """A chunk; the decision on its push once the last one has come."""
        try:
            env = self._chunks.add(stream, index, payload)
        except ChunksRefused as exc:
            refused = exc.envelope
            return self._reject(exc.kind, refused.target, str(exc), refused.version)
        if env is None:
            return None
        kind = stream.rsplit("/", 1)[1]
        try:
            return self._decide(env, kind)
        except PushRejected as exc:
            return self._reject(kind, env.target, str(exc), env.version)

    def expire(self, now: float) -> Decision | None:
        """Report `incomplete` and free the pushes whose chunks did not all come within
        `fleet.chunk_timeout_s` of their envelope (issue #13); None when there is none."""
        decision = None
        for waiting in self._chunks.expired(now):
            env, kind = waiting.envelope, waiting.kind
            reason = (
                f"{len(waiting.parts)} of {env.chunks} chunks came within "
                f"{self.config.fleet.chunk_timeout_s:.0f}s of the envelope"
            )
            log.warning("push %s v%d from %s incomplete: %s", kind, env.version, env.target,
                        reason)  # fmt: skip
            self.state.record(push_doc(kind, "incomplete", reason, env.version, env.target))
            self._save_soon()
            decision = Decision(False, "incomplete", reason)
        return decision

    def _already_seen(self, env: Envelope, kind: str) -> bool:
        """A retained push seen before (silently skipped), or a replay of an older one."""
        stream = f"{env.target}/{kind}"
        seen = self.state.seen.get(stream)
        if seen is not None and (env.version, env.sha256) == (seen.version, seen.sha256):
            return True
        newest = -1 if seen is None else seen.version
        if env.version <= newest:
            raise _Replay(f"stale: version {env.version} is not newer than {newest}")
        return False

    def _check_precedence(self, env: Envelope, kind: str) -> None:
        current = self.state.current.get(kind)
        if env.target.startswith("group:") and current and current.target.startswith("device:"):
            self._mark_seen(env, kind)
            raise PushRejected(f"a device-level push (v{current.version}) overrides group pushes")

    def _mark_seen(self, env: Envelope, kind: str) -> None:
        stream = f"{env.target}/{kind}"
        self.state.seen[stream] = SeenVersion(env.version, env.sha256)

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
        candidate.record(push_doc(kind, "checking", "", env.version, env.target))
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
        self.state.record(push_doc(kind, "rejected", reason, version, target), outcome)
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

    def take_deferred(self) -> list[tuple[str, bytes]]:
        """The pushes that waited for a trial (see `offer`), to be offered again now."""
        deferred, self.deferred = self.deferred, []
        return deferred

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
