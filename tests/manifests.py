"""Model files with an edited manifest, for tests that feed the agent what no export gives."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from agent.model.manifest import MANIFEST_KEY


def with_stream(model: Path, out: Path, part: str | None = None, **update: object) -> Path:
    """A copy of `model` at `out` whose manifest's `stream` (or `stream.<part>`) has `update`;
    the graph is the same."""
    proto = onnx.load(str(model))
    (entry,) = [p for p in proto.metadata_props if p.key == MANIFEST_KEY]
    manifest = json.loads(entry.value)
    (manifest["stream"] if part is None else manifest["stream"][part]).update(update)
    entry.value = json.dumps(manifest)
    onnx.save(proto, str(out))
    return out
