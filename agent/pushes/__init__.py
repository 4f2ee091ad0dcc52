"""Fleet pushes on the gateway: which signed pushes to apply, what is running, how to go back.

This package re-exports what the rest of the agent uses; its modules' docstrings say the rest.
"""

from agent.pushes.desk import (
    PROCESS,
    Desk,
    FleetState,
    Health,
    abandon_pending,
    discard_invalid,
    load_effective,
    recover_interrupted,
)

__all__ = [
    "PROCESS",
    "Desk",
    "FleetState",
    "Health",
    "abandon_pending",
    "discard_invalid",
    "load_effective",
    "recover_interrupted",
]
