"""JSON that every parser accepts, for what the commands print.

Python's `json.dumps` writes `NaN` and `Infinity`, which are not JSON: `jq` and most languages'
parsers refuse the whole line. A metric that has no value (ROC AUC on data with a single class)
is printed as `null` instead (issue 17, item 3).
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_null(value: Any) -> Any:
    """`value` with every NaN or infinite float, however deeply nested, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Strict JSON text (`allow_nan=False` would raise on a NaN the conversion missed)."""
    return json.dumps(finite_or_null(value), allow_nan=False)
