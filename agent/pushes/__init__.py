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

Modules: `state` (the saved state), `chunks` (reassembly of a push sent in chunks), `desk`
(intake and decisions), `trial` (the health of a switched version and its verdict), `compose`
(the local config with the pushes over it, and what a push may set). Below is what the rest of
the agent uses.
"""

from agent.pushes.compose import discard_invalid, load_effective
from agent.pushes.desk import Desk
from agent.pushes.state import FleetState
from agent.pushes.trial import Health, Trial, abandon_pending, recover_interrupted

__all__ = [
    "Desk",
    "FleetState",
    "Health",
    "Trial",
    "abandon_pending",
    "discard_invalid",
    "load_effective",
    "recover_interrupted",
]
