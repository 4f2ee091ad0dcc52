"""`edge-agent run`: one pipeline at a time, rebuilt in place when the config changes.

    start ─▶ run ──(SIGHUP or fleet push: a new config that passed its checks)──▶ switch ─▶ run …
              │                                                                     │
              ▼ stop: exit 0              cannot be built, or fails before it starts ▼
                                               fall back: rebuild the config that ran before

A reload (SIGHUP) reads the config file, the model and the secrets again and checks them as at
start; what fails the checks is rejected with its reason and the running pipeline goes on, and
what is unchanged is not restarted. A new config that passes the checks and still cannot start
(its metrics port is taken, say) is abandoned (a pushed version on trial is rolled back with
that reason) and the previous config runs again: no new config may end the process (issue 13).
A failure of the first pipeline, or of one that had started, is not a switch's to undo: it
ends `run`, and systemd restarts the agent.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from agent import signals
from agent.config import AgentConfig, ConfigError, load_config, secret_files
from agent.logs import configure
from agent.model.manifest import ModelFileError
from agent.model.score import Scorer
from agent.notify import Notifier
from agent.pushes import (
    FleetState,
    abandon_pending,
    discard_invalid,
    load_effective,
    recover_interrupted,
)
from agent.runtime import Agent, Reload
from agent.validate import check_runnable

log = logging.getLogger(__name__)

# What building a pipeline raises for a config that passed its checks (a pydantic model among
# the ValueErrors); each means "back to the previous config", none may end the process.
BUILD_ERRORS = (ConfigError, ModelFileError, OSError, ValueError, sqlite3.Error)
# What a pipeline's run raises when it fails in its start.
START_ERRORS = (ConfigError, OSError, ValueError, sqlite3.Error)


def load_runnable(
    path: Path, overrides: dict[str, Any], state: FleetState | None = None
) -> tuple[AgentConfig, Scorer]:
    """The config, its model and its secrets, each checked, as `run` would use them: the file,
    the command-line `overrides` and the pushes in `state` (default: the saved state)."""
    config = load_effective(path, overrides, state)
    return config, check_runnable(config, path)


def fingerprint(config: AgentConfig, scorer: Scorer) -> tuple[object, ...]:
    """What a reload compares: the config, the model (its graph and its manifest: a file
    re-exported with other stream parameters or thresholds around the same graph is a
    change), and the files its secrets are in (a renewed certificate or rotated password
    under the same path is a change)."""
    digests = tuple(
        hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else None
        for f in secret_files(config)
    )
    return config, scorer.manifest, digests


def recover(path: Path, overrides: dict[str, Any]) -> None:
    """At start, before anything loads: undo what an earlier process left half done (a push it
    died trying), and set aside pushed versions that today's checks refuse."""
    if recover_interrupted(load_config(path, overrides).storage.data_dir):
        log.error("a pushed version died in its health check; rolled back to the previous one")
    for dropped in discard_invalid(path, overrides, save=True)[1]:
        log.error("%s; running the previous version", dropped)


def run_agent(path: Path, overrides: dict[str, Any]) -> int:
    """`edge-agent run`: until SIGTERM or SIGINT; 0 after a clean stop."""
    # Installed again in case the CLI was entered another way than `python -m agent`.
    signals.install()
    configure("info")
    recover(path, overrides)
    return Supervisor(path, overrides, signals.stop, signals.reload).run()


class Supervisor:
    """Runs the pipeline (`agent`) for the config in force (`config`) and decides what runs
    next: the same, a new config, or the one that ran before it."""

    def __init__(
        self,
        path: Path,
        overrides: dict[str, Any],
        stop: threading.Event,
        reload: threading.Event,
        notifier: Notifier | None = None,
    ) -> None:
        """`path` and `overrides`: the config file and the command line, read again on each
        reload; `stop` ends the run, `reload` (SIGHUP) asks for `load_again`."""
        self.source = (path, overrides)
        self.stop, self.reload = stop, reload
        self.config, scorer = load_runnable(path, overrides)
        configure(self.config.log_level, self.config.log_format)
        self.current = fingerprint(self.config, scorer)
        self.notifier = notifier or Notifier()
        self.agent = Agent(self.config, self.notifier, self.source, scorer)
        self.before: AgentConfig | None = None  # what ran before a switch, while it starts

    def run(self) -> int:
        """Pipeline after pipeline until `stop`; 0 then. What no switch explains propagates."""
        while True:
            try:
                next_config = self.agent.run(self.stop, Reload(self.reload, self.load_again))
            except START_ERRORS as exc:
                if not self.undo_failed_start(exc):
                    raise
                continue
            self.before = None
            if next_config is None or self.stop.is_set():
                return 0
            self.switch(next_config)

    def load_again(self) -> AgentConfig | None:
        """SIGHUP: the config file (and the model and secrets it names) checked as at start;
        None keeps the running config."""
        try:
            new, new_scorer = load_runnable(*self.source)
        except (ConfigError, ModelFileError, OSError) as exc:
            log.error("reload rejected, still running the previous config: %s", exc)
            return None
        if fingerprint(new, new_scorer) == self.current:
            log.info("reload: config, model and secrets unchanged")
            return None
        log.info("reload: applying the new config (the pipeline restarts in place)")
        return new

    def switch(self, next_config: AgentConfig) -> None:
        """Build the pipeline for `next_config`, which runs next; if it cannot be built, the
        running config's is built again."""
        try:
            candidate = Agent(next_config, self.notifier, self.source)
        except BUILD_ERRORS as exc:
            self._fall_back(next_config, exc)
            return
        self.before, self.agent, self.config = self.config, candidate, next_config
        self.current = fingerprint(next_config, candidate.scorer)
        configure(next_config.log_level, next_config.log_format)

    def undo_failed_start(self, exc: Exception) -> bool:
        """The pipeline's run raised `exc`. If it was a switch's new pipeline and had not
        started, back to the config before it (True); otherwise False, for the caller to
        re-raise: the first pipeline's failure, or a later one's, is not a switch's."""
        if self.agent.started or self.before is None:
            return False
        failed, self.config, self.before = self.config, self.before, None
        self._fall_back(failed, exc)
        self.current = fingerprint(self.config, self.agent.scorer)
        return True

    def _fall_back(self, failed: AgentConfig, exc: Exception) -> None:
        """A new config that validated but could not start: back to the one that ran."""
        log.error("the new config could not start (%s); back to the previous one", exc)
        abandon_pending(failed.storage.data_dir, f"could not start: {exc}")
        configure(self.config.log_level, self.config.log_format)
        self.agent = Agent(self.config, self.notifier, self.source)
