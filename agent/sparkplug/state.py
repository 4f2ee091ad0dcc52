"""The Sparkplug decoder's state as JSON, so that a restart does not forget the births.

Without it, every data message queued while the agent was down (and the first of each node
after) were dead letters until the node rebirthed: a backlog lost. The snapshot holds what the
births declared (aliases, bdSeq), the sequence number and the last value of each sensor, for
the nodes that have reported, the most recent first, up to MAX_BYTES.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.sparkplug.decoder import _Node

MAX_BYTES = 1024 * 1024
VERSION = 1


def dump(nodes: OrderedDict[tuple[str, str], _Node]) -> str:
    out, size = [], 0
    for (group, name), node in reversed(nodes.items()):
        if not node.reported:
            continue
        item = json.dumps(
            [
                group,
                name,
                node.bd_seq,
                node.seq,
                node.scope.aliases,
                [[d, s.aliases, s.reported] for d, s in node.devices.items()],
                node.values,
            ]
        )
        size += len(item) + 1
        if size > MAX_BYTES:
            break
        out.append(item)
    items = ",".join(reversed(out))
    return f'{{"v": {VERSION}, "nodes": [{items}]}}'


def load(text: str) -> OrderedDict[tuple[str, str], _Node]:
    """The nodes of a snapshot; a snapshot that does not read (another version, damage) is
    none: the nodes are asked to rebirth as when there is no snapshot. Damage includes what
    JSON parses but Python cannot take (nesting past the recursion limit, a number too large
    for a float) and a value that is not finite (no decoded metric gives one)."""
    from agent.sparkplug.decoder import _Node, _Scope

    nodes: OrderedDict[tuple[str, str], _Node] = OrderedDict()
    try:
        doc = json.loads(text)
        if doc.get("v") != VERSION:
            return nodes
        for group, name, bd_seq, seq, aliases, devices, values in doc["nodes"]:
            node = _Node(bd_seq, int(seq), _Scope(_aliases(aliases), True), reported=True)
            for device, device_aliases, reported in devices:
                node.devices[str(device)] = _Scope(_aliases(device_aliases), bool(reported))
            node.values = {
                str(a): {str(k): _finite(v) for k, v in vals.items()} for a, vals in values.items()
            }
            nodes[(str(group), str(name))] = node
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError):
        return OrderedDict()
    return nodes


def _aliases(raw: dict) -> dict[int, str]:
    return {int(k): str(v) for k, v in raw.items()}


def _finite(raw: object) -> float:
    value = float(raw)  # type: ignore[arg-type]
    if not math.isfinite(value):
        raise ValueError(f"saved value {value} is not finite")
    return value
