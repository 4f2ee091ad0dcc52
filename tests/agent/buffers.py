"""An agent's buffer database as the agent leaves it, for the tests of the commands that read
one (`edge-agent buffer`, the file modes of its export)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from agent.readings import ReadingBlock
from agent.store.batch import Batch
from agent.store.database import Store
from trainer.simulate import SENSORS, simulate

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def agent_database(folder: Path, rows: int = 600) -> Path:
    """A database as the agent leaves it: sensor names in meta, readings of two assets."""
    _, values, _ = simulate(rows, [], seed=2)
    store = Store(folder)
    store.set_meta("sensors", json.dumps(list(SENSORS)))
    for asset in ("pump-1", "pump-2"):
        store.commit_batch(
            Batch(
                readings=[
                    ReadingBlock.of(
                        asset,
                        T0 + 60 * np.arange(rows),
                        values[:rows],
                        score=np.full(rows, 0.25),
                        received_at=T0,
                    )
                ]
            )
        )
    store.close()
    return folder
