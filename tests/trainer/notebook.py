"""Run a markdown tutorial as a notebook: its ```python blocks in order, in one namespace.

Only import lines change, from the earlier library's name to ours (`from pynomaly.data import
DataLoader` → `from trainer.data import DataLoader`); every other line runs as written. Each
block's outcome is recorded, so a test can say which ran and how the others failed.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass
from pathlib import Path

_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.S | re.M)
_IMPORT = re.compile(r"^(\s*)(from|import)\s+pynomaly\b", re.M)


@dataclass
class Outcome:
    index: int  # 1-based, in the tutorial's order
    first_line: str
    error: BaseException | None

    @property
    def ran(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        if self.error is None:
            return f"block {self.index}: ran"
        return f"block {self.index} ({self.first_line}): {type(self.error).__name__}: {self.error}"


def python_blocks(markdown: str) -> list[str]:
    return [m.group(1) for m in _BLOCK.finditer(markdown)]


def rewrite_imports(code: str) -> str:
    """`pynomaly` → `trainer` in import statements only."""
    return _IMPORT.sub(lambda m: f"{m.group(1)}{m.group(2)} trainer", code)


def run(path: Path) -> list[Outcome]:
    namespace: dict[str, object] = {"__name__": "__tutorial__"}
    outcomes = []
    for i, block in enumerate(python_blocks(path.read_text(encoding="utf-8")), start=1):
        first = next((ln.strip() for ln in block.splitlines() if ln.strip()), "")
        try:
            exec(compile(rewrite_imports(block), f"{path.name}#block{i}", "exec"), namespace)
        except Exception as exc:  # noqa: BLE001 - any failure is the outcome recorded
            exc.__notes__ = [traceback.format_exc(limit=-3)]
            outcomes.append(Outcome(i, first, exc))
        else:
            outcomes.append(Outcome(i, first, None))
    return outcomes
