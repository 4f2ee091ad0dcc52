"""A source's topic template: the filter to subscribe to, and the asset and sensor a topic
binds. `plant/{asset}/{sensor}` subscribes to `plant/+/+`; `plant/p1/temp` binds asset `p1`,
sensor `temp`. A bound asset must be an identifier (it ends up in alert topics)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.config import IDENTIFIER_PATTERN

_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_BINDINGS = ("{asset}", "{sensor}")


@dataclass(frozen=True)
class Bound:
    asset: str | None
    sensor: str | None


class TopicTemplate:
    def __init__(self, template: str) -> None:
        self.levels = template.split("/")
        self.filter = "/".join("+" if x in _BINDINGS else x for x in self.levels)
        self._tail = self.levels[-1] == "#"
        self._fixed = self.levels[:-1] if self._tail else self.levels

    def match(self, topic: str) -> Bound | None:
        """The bindings, if `topic` matches the filter (None otherwise). A bound asset or
        sensor that is not an identifier does not match."""
        levels = topic.split("/")
        if len(levels) < len(self._fixed) or (not self._tail and len(levels) != len(self._fixed)):
            return None
        bound: dict[str, str] = {}
        for want, got in zip(self._fixed, levels, strict=False):
            if want in _BINDINGS:
                if not _IDENTIFIER.fullmatch(got):
                    return None
                bound[want] = got
            elif want != "+" and want != got:
                return None
        return Bound(bound.get("{asset}"), bound.get("{sensor}"))
