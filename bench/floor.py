"""The memory floor under the agent: its third-party imports and one ONNX Runtime session.

`python -m bench.floor MODEL` imports what the agent imports beyond the standard library (numpy,
onnxruntime, paho-mqtt, pydantic, orjson) and sqlite3, opens MODEL in a one-thread session as
the agent's scorer does, scores one window and prints its peak RSS in MiB as JSON. No agent
code runs, so the agent's own peak cannot be lower than this.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import paho.mqtt.client
import pydantic

IMPORTED = (sqlite3, orjson, paho.mqtt.client, pydantic)  # held for their memory, not used


def peak_rss_mib() -> float:
    # Its own reader, like bench.harness's: importing that would load agent and trainer code.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def main(model: Path) -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.read_bytes(), options, providers=["CPUExecutionProvider"])
    window = session.get_inputs()[0]
    session.run(None, {window.name: np.zeros([1, *window.shape[1:]], np.float32)})
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
