"""What makes a config runnable beyond its schema: the model it names, the model's alert levels
merged with `[alerts.levels]`, the brokers' secrets, the fleet's trusted keys, a data folder.

`check-config`, `run`, SIGHUP and a fleet push's checks all go through `check_runnable`, so
that what one accepts the others can start (issue 13: `critical = 0.0` passed `check-config`
and a push's checks, then the merged thresholds failed when the pipeline was built).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from agent.config import AgentConfig, ConfigError
from agent.connection import password, tls_context
from agent.envelope import key_id, load_public_key
from agent.model.manifest import ModelFileError, Thresholds
from agent.model.score import Scorer
from agent.store.database import DB_NAME

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


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
    _check_source_sensors(config, scorer.manifest.sensor_names, origin)
    for name in ("local", "upstream"):
        broker = getattr(config, name)
        try:
            password(broker)
            if broker.tls is not None:
                tls_context(broker.tls)
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {name}.{exc}") from None
    trusted_keys(config, origin)
    _check_data_dir(config, origin)
    return scorer


def _check_source_sensors(config: AgentConfig, sensors: list[str], origin: Path | str) -> None:
    """A source's `sensors` maps the model's sensors: a key the model lacks is a typo that
    would leave its sensor missing from every reading."""
    for n, source in enumerate(config.ingest.sources):
        unknown = sorted(set(source.sensors) - set(sensors))
        if unknown:
            raise ConfigError(
                f"{origin}: ingest.sources.{n}.sensors: {', '.join(map(repr, unknown))} "
                f"not among the model's sensors ({', '.join(sensors)})"
            )


def trusted_keys(config: AgentConfig, origin: Path | str) -> dict[str, Ed25519PublicKey]:
    """The keys whose pushes the device takes, by key id, or a ConfigError naming the one that
    does not load (checked here so that `check-config` fails where `run` would)."""
    trusted = {}
    for path in config.fleet.trusted_keys:
        try:
            public = load_public_key(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{origin}: fleet.trusted_keys: {path}: {exc}") from None
        trusted[key_id(public)] = public
    return trusted


def _check_data_dir(config: AgentConfig, origin: Path | str) -> None:
    """A file where the data folder (or one above it) should be, or a folder where the
    database should be: `run` would stop on it, with a traceback for the first."""
    data_dir = config.storage.data_dir
    database = data_dir / DB_NAME
    if database.is_dir():
        raise ConfigError(f"{origin}: storage.data_dir: {database} is a folder, not a database")
    for folder in (data_dir, *data_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"{origin}: storage.data_dir: {folder} is not a folder")
            return
