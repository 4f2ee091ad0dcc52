"""What makes a config runnable beyond its schema: the model it names, the model's alert levels
merged with `[alerts.levels]`, the brokers' secrets.

`check-config`, `run`, SIGHUP and a fleet push's checks all go through `check_runnable`, so
that what one accepts the others can start (issue 13: `critical = 0.0` passed `check-config`
and a push's checks, then the merged thresholds failed when the pipeline was built).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from agent.config import AgentConfig, ConfigError
from agent.connection import password, tls_context
from agent.model.manifest import ModelFileError, Thresholds
from agent.model.score import Scorer


def merged_thresholds(config: AgentConfig, model: Thresholds, origin: Path | str) -> Thresholds:
    """The model's levels with the config's overrides over them, or a ConfigError naming the
    overrides and the model's levels they clash with."""
    overrides = {k: v for k, v in config.alerts.levels.model_dump().items() if v is not None}
    merged = {**model.model_dump(), **overrides}
    try:
        return Thresholds(**merged)
    except ValidationError:
        given = ", ".join(f"{k} = {v}" for k, v in overrides.items())
        levels = ", ".join(f"{k} {v:g}" for k, v in merged.items())
        raise ConfigError(
            f"{origin}: 1 invalid field(s):\n  alerts.levels: {given} with the model's levels "
            f"gives {levels}; they must satisfy info <= warning <= critical"
        ) from None


def check_runnable(config: AgentConfig, origin: Path | str) -> Scorer:
    """The config's model loaded, its levels merged and its secrets readable, as `run` uses
    them; a ConfigError naming the field otherwise."""
    try:
        scorer = Scorer.load(config.model.path)
    except ModelFileError as exc:
        raise ConfigError(f"{origin}: model.path: {exc}") from None
    merged_thresholds(config, scorer.manifest.thresholds, origin)
    for name in ("local", "upstream"):
        broker = getattr(config, name)
        try:
            password(broker)
            if broker.tls is not None:
                tls_context(broker.tls)
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {name}.{exc}") from None
    return scorer
