"""The agent's model contract: the part of the agent that other packages may import.

A detector is one `.onnx` file with its manifest inside. These modules say what that file is and
how the agent scores with it, so that the trainer (which writes and checks models), the fleet
(which pushes them and replays CSV files), the bench and the demo use exactly what the gateway
runs:

- `agent.model.manifest`: the manifest schema, the graph's input and output names, the alert
  levels, and the graph hash check (`Manifest`, `ModelFileError`, `LEVELS`, ...).
- `agent.model.score`: loading a model file into ONNX Runtime and scoring windows (`Scorer`,
  `read_model`).
- `agent.model.table`: reading a sensor CSV file the way `edge-agent score` does (`read_table`,
  `Table`, `TableError`).
- `agent.model.offline`: scoring a table through the agent's own window and score stages
  (`score_table`), which `edge-agent score` and the trainer's evaluate and benchmark share.
- `agent.model.stream`: the per-asset layer learned online over the graph's score (`Stream`,
  `StreamParams`, `StreamState`), run by the agent and by offline scoring alike.

Nothing else of `agent` is theirs to import, apart from the few exceptions that
tests/test_boundaries.py lists with a reason. This package imports no submodule itself, so that
importing one of them loads only what it needs.
"""
