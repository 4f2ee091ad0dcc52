"""Payload formats by name. Each is imported only when a config uses it, so that a format
whose library is an optional extra (`sparkplug_b`) costs nothing when unused, and a config that
uses it without the extra fails `check-config` with the install line."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from agent.sources import Decoder

# name -> (module with `make_decoder`, the extra it needs or None)
FORMATS: dict[str, tuple[str, str | None]] = {
    "json": ("agent.sources.json_format", None),
    "value": ("agent.sources.value_format", None),
    "sparkplug_b": ("agent.sources.sparkplug", "sparkplug"),
}

# make_decoder(source: SourceConfig, sensors: Sequence[str], ingest: IngestConfig) -> Decoder
# (agent.config is not imported here: the config checks formats through this module.)
Factory = Callable[..., Decoder]


class FormatUnavailable(ValueError):
    """A format that is unknown, or whose optional extra is not installed."""


def decoder_factory(name: str) -> Factory:
    """The format's `make_decoder`, importing its module now."""
    if name not in FORMATS:
        raise FormatUnavailable(f"unknown format {name!r}; known: {', '.join(sorted(FORMATS))}")
    module_name, extra = FORMATS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None:
            raise
        raise FormatUnavailable(
            f"format {name!r} needs the `{extra}` extra: install the `{extra}` extra "
            f"(pip install 'edge-anomaly-agent[{extra}]'): {exc}"
        ) from exc
    return module.make_decoder
