"""What one micro-batch commits: built by the pipeline (`agent.pipeline`), committed whole by
`Store.commit_batch` (`agent.store.commit`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.alert import Alert
from agent.ingest import DeadLetter
from agent.readings import ReadingBlock
from agent.window import WindowState

RECENT_DIGESTS = 10_000  # digests of applied messages kept: far more than can be unacknowledged


@dataclass(frozen=True)
class AssetState:
    asset: str
    window: WindowState
    episode: str  # AlertTracker.snapshot
    # Stream.dump of the asset's streaming layer (agent.model.stream); None: start a new one
    # (a row of a release before #15, or of another model's layer).
    stream: bytes | None = None

    def row(self) -> tuple[object, ...]:
        """As `asset_state` stores it."""
        w = self.window
        return (self.asset, w.rows, w.n_rows, w.last_ts, self.episode, w.seen_at, self.stream)


@dataclass
class Batch:
    """Everything one micro-batch changes, committed together or not at all."""

    readings: list[ReadingBlock] = field(default_factory=list)  # one per asset
    alerts: list[tuple[str, Alert]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    states: list[AssetState] = field(default_factory=list)
    digests: list[tuple[bytes, bool]] = field(default_factory=list)  # and: gave readings
    # (asset, its readings waiting to be joined as JSON, or None: none wait) (agent.sources.join)
    joins: list[tuple[str, str | None]] = field(default_factory=list)
