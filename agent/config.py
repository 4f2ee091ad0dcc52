"""The agent's configuration: one pydantic schema, validated once at start-up.

Field descriptions are the configuration reference: `agent.config_doc` renders them into
docs/configuration.md, and a test keeps the two in step. Unknown keys are errors, so a typo
cannot silently fall back to a default. Relative paths are resolved against the config file's
folder.
"""

from __future__ import annotations

import tomllib
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# Identifiers end up inside MQTT topics: no wildcards, separators or NUL, and not too long. The
# same rule holds for device ids, groups and topic prefixes in the config and for the asset a
# reading's topic names (`ingest`).
IDENTIFIER_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
IDENTIFIER_RULE = "1 to 64 of A-Z a-z 0-9 _ . : -"
Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]
# MQTT 5 sends expiry intervals as four-byte integers: a larger one cannot be published at all
# (an `alert_ttl_s` over it stopped the forwarder at the first alert, at every start).
MQTT_MAX_INTERVAL_S = 2**32 - 1


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceConfig(_Section):
    id: Identifier = Field(description="Device id; part of every topic this agent uses.")


class TlsConfig(_Section):
    ca_file: Path | None = Field(
        default=None,
        description="CA certificates (PEM) the broker's certificate must chain to. Default: the "
        "system's CAs.",
    )
    cert_file: Path | None = Field(
        default=None,
        description="Client certificate (PEM), for a broker that authenticates clients by "
        "certificate; needs `key_file`.",
    )
    key_file: Path | None = Field(
        default=None, description="Private key (PEM) of `cert_file`; keep it mode 0600."
    )
    min_version: Literal["1.2", "1.3"] = Field(
        default="1.2", description="Oldest TLS version accepted."
    )

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together")
        return self


class BrokerConfig(_Section):
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Broker host name or address. With TLS the broker's certificate must name it.",
    )
    port: int = Field(default=1883, ge=1, le=65535, description="Broker TCP port.")
    client_id: str | None = Field(
        default=None,
        description="MQTT client id (default `edge-agent-<device id>-local` / `-upstream`).",
    )
    keepalive: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive in seconds.")
    username: str | None = Field(default=None, description="MQTT user name.")
    password_file: Path | None = Field(
        default=None,
        description="File whose first line is the MQTT password (the password itself never goes "
        "in the config, and is never logged).",
    )
    password_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Or: the environment variable that holds the MQTT password.",
    )
    tls: TlsConfig | None = Field(
        default=None,
        description="Present (even as an empty table): connect with TLS, checking the "
        "broker's certificate and name; never plain text.",
    )

    @model_validator(mode="after")
    def _one_password_source(self) -> BrokerConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give password_file or password_env, not both")
        if (self.password_file or self.password_env) and not self.username:
            raise ValueError("a password needs a username")
        return self


class LocalBrokerConfig(BrokerConfig):
    session_expiry_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        le=MQTT_MAX_INTERVAL_S,
        description="How long the local broker keeps the agent's session (and queues its "
        "readings) while the agent is away, in seconds.",
    )
    receive_maximum: int = Field(
        default=1000,
        ge=1,
        le=65535,
        description="Readings messages the broker may send before the agent acknowledges them "
        "(each is acknowledged after its batch is committed); the agent also holds no more than "
        "this many received and not yet taken, whatever the broker sends. After a resumed "
        "session up to this many are taken as one batch and put in time order (see Storage and "
        "delivery).",
    )


class TopicsConfig(_Section):
    prefix: Identifier = Field(default="edge", description="First level of every topic.")


class ModelConfig(_Section):
    path: Path = Field(description="The detector: one `.onnx` file exported by `edge-trainer`.")


class ScoringConfig(_Section):
    batch_max: int = Field(
        default=256,
        ge=1,
        le=65536,
        description="Most messages taken into one micro-batch (one transaction).",
    )
    batch_max_bytes: int = Field(
        default=512 * 1024,
        ge=1024,
        description="Most payload bytes taken into one micro-batch (the burst after a resumed "
        "session too); received messages wait in an inbox of twice this. Bounds memory when "
        "messages carry arrays of readings, whose parsed form takes several times their payload.",
    )


class TimestampConfig(_Section):
    policy: Literal["payload", "received", "payload_else_received"] = Field(
        default="payload",
        description="Where a reading's time comes from: `payload` (its `ts`; none is `bad_ts`), "
        "`received` (when the agent received the message; a `ts` in it is ignored), or "
        "`payload_else_received` (its `ts` if it has one). Received times are made to rise per "
        "asset (see Sources).",
    )
    zone: str | None = Field(
        default=None,
        description="IANA time zone (e.g. `Europe/Berlin`) that times without an offset "
        "(`2020-03-09 10:34:33`) are read in. Default: such times are `bad_ts`.",
    )
    unit: Literal["auto", "s", "ms"] = Field(
        default="s",
        description="A numeric `ts`: unix seconds (`s`), milliseconds (`ms`), or `auto`: "
        "milliseconds when above 1e11 (the year 5138 in seconds), else seconds.",
    )

    @model_validator(mode="after")
    def _known_zone(self) -> TimestampConfig:
        if self.zone is not None:
            try:
                zoneinfo.ZoneInfo(self.zone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(
                    f"zone {self.zone!r} is not an IANA time zone name (e.g. Europe/Berlin)"
                ) from exc
        return self


class SparkplugConfig(_Section):
    asset: Literal["device", "node", "node_device"] = Field(
        default="device",
        description="Which topic level names the asset: `device` (a DBIRTH/DDATA's device id; "
        "a node's own metrics go to the node id), `node` (the edge node id, its devices' "
        "metrics together), or `node_device` (`<node>.<device>`).",
    )
    max_nodes: int = Field(
        default=256,
        ge=1,
        description="Most edge nodes whose births are kept; one more forgets the node silent "
        "longest among those that never sent data, else the one silent longest (it is asked to "
        "rebirth when it speaks again). Bounds what a publisher making up node ids can hold.",
    )
    max_devices: int = Field(
        default=64, ge=1, description="Most devices kept per edge node (the same way)."
    )
    max_metrics: int = Field(
        default=512,
        ge=1,
        description="Most metrics a birth may declare; a larger birth is dead-lettered "
        "(`sparkplug_oversized_birth`).",
    )
    rebirth_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="At most one rebirth request (NCMD `Node Control/Rebirth`) per edge node in "
        "this many seconds, however many messages need one: a node flooding unknown aliases "
        "cannot make the agent flood the broker.",
    )


class SourceConfig(_Section):
    name: Identifier = Field(description="The source's name, in logs and dead letters.")
    topic: str = Field(
        min_length=1,
        max_length=256,
        description="Topic filter the agent subscribes to, whose whole levels `{asset}` and "
        "`{sensor}` name the asset and the sensor (`zigbee2mqtt/{asset}`, "
        "`plant/{asset}/{sensor}`); `+` and a last `#` match without naming.",
    )
    format: str = Field(
        default="json",
        pattern=r"^[a-z0-9_]{1,32}$",
        description="Payload format: `json` (an object, or an array of them; `sensors` are "
        "field paths), `value` (one bare number: the `{sensor}` of the topic), `sparkplug_b` "
        "(needs the `sparkplug` extra).",
    )
    asset: Identifier | None = Field(
        default=None, description="The asset, when the topic has no `{asset}`."
    )
    sensors: dict[str, str] = Field(
        default_factory=dict,
        description="Model sensor = what this source calls it: a field path for `json` "
        "(`ENERGY.Temperature`, dots into nested objects), a topic's `{sensor}` for `value`. "
        "Empty: the model's sensor names as they are.",
    )
    ts_field: str = Field(
        default="ts",
        min_length=1,
        max_length=128,
        description="Field path of a `json` payload's time (`time`, `meta.ts`).",
    )
    timestamps: TimestampConfig | None = Field(
        default=None,
        description="How this source's times are read. Default: the payload's `ts` in any "
        "unit (`auto`); for `value`, when the agent received the message (`received`).",
    )
    join_wait_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Sensors that come one per message are joined into one reading per asset: "
        "a reading waits at most this long (received time) for its other sensors, then is "
        "taken with what it has (`ingest.missing_sensor`).",
    )
    sparkplug: SparkplugConfig | None = Field(
        default=None,
        description="Options of a `sparkplug_b` source (see Sparkplug B). Its metric names "
        "map to the model's sensors by `sensors`, its groups are chosen by `topic`.",
    )
    join_window_s: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="Values of one asset whose times are within this of the first value of a "
        "waiting reading belong to it (0: the same time exactly).",
    )

    @model_validator(mode="after")
    def _asset_named(self) -> SourceConfig:
        levels = self.topic.split("/")
        if "#" in levels[:-1] or any(("#" in x or "+" in x) and len(x) > 1 for x in levels):
            raise ValueError(f"topic {self.topic!r}: `+` and `#` stand for whole levels, `#` last")
        if "\x00" in self.topic:
            raise ValueError("topic: no NUL characters")
        if any(("{" in x or "}" in x) and x not in ("{asset}", "{sensor}") for x in levels):
            raise ValueError(f"topic {self.topic!r}: a binding is a whole level")
        for name in ("{asset}", "{sensor}"):
            if levels.count(name) > 1:
                raise ValueError(f"topic {self.topic!r}: {name} appears twice")
        if self.format == "sparkplug_b":
            if "{asset}" in levels or "{sensor}" in levels or self.asset is not None:
                raise ValueError(
                    "a `sparkplug_b` source's assets are its edge nodes or devices "
                    "(`sparkplug.asset`): no `{asset}`, `{sensor}` nor `asset`"
                )
        elif ("{asset}" in levels) == (self.asset is not None):
            raise ValueError("give the asset in the topic (`{asset}`) or as `asset`, not both")
        if self.format == "value" and "{sensor}" not in levels:
            raise ValueError("a `value` source names its sensor in the topic: `{sensor}`")
        return self

    @property
    def stamps(self) -> TimestampConfig:
        """The timestamp settings in force (the default depends on the format)."""
        if self.timestamps is not None:
            return self.timestamps
        if self.format == "value":
            return TimestampConfig(policy="received", unit="auto")
        return TimestampConfig(unit="auto")


class IngestConfig(_Section):
    max_payload_bytes: int = Field(
        default=65536, ge=64, description="Larger reading payloads are dead-lettered unread."
    )
    max_depth: int = Field(
        default=8,
        ge=2,
        le=64,
        description="Deepest JSON nesting accepted (a reading is 1, an array of readings 2); "
        "deeper payloads are dead-lettered as `too_deep`.",
    )
    assets: list[Identifier] = Field(
        default_factory=list,
        description="Assets this gateway accepts readings for; others are dead-lettered as "
        "`unknown_asset`. Empty: any asset.",
    )
    missing_sensor: Literal["reject", "impute"] = Field(
        default="reject",
        description="A reading without one of the model's sensors: `reject` it "
        "(`missing_sensor`), or `impute` the sensor's training mean from the model's manifest "
        "(counted; a reading with none of the sensors is still rejected).",
    )
    max_future_s: float = Field(
        default=300.0,
        gt=0,
        description="A reading whose `ts` is more than this many seconds ahead of the gateway's "
        "clock is dead-lettered as `future_ts`. An accepted reading sets its asset's clock, and "
        "earlier ones are then `out_of_order`: this bounds how long one bad time can blind an "
        "asset, and leaves 5 minutes for sensor clocks that run ahead.",
    )
    max_assets: int = Field(
        default=1000,
        ge=1,
        description="Most assets with a window, streaming-layer state and episode in memory "
        "(and in `asset_state`); a reading for one more is dead-lettered as `too_many_assets` "
        "until one goes idle. A gateway serves dozens of machines; 1,000 costs about 1 KiB plus "
        "8 x window x sensors bytes each (and the layer's state), and stops a publisher "
        "inventing asset names from filling the memory.",
    )
    asset_idle_s: float = Field(
        default=86400.0,
        ge=1,
        description="An asset with no reading for this long (the agent's running time, which clock "
        "steps do not move; time stopped does not count) is forgotten: its "
        "window, streaming-layer state and episode leave memory and the database, and its next "
        "reading starts a new window. Also how long made-up asset names can hold places in "
        "`ingest.max_assets`.",
    )

    timestamps: TimestampConfig = Field(
        default_factory=TimestampConfig,
        description="How the times of readings on `<prefix>/<device>/readings/<asset>` are read.",
    )
    sources: list[SourceConfig] = Field(
        default_factory=list,
        max_length=64,
        description="More sources (`[[ingest.sources]]`), besides the readings topic: other "
        "topics and payload formats mapped to the model's sensors (see Sources).",
    )

    @model_validator(mode="after")
    def _room_for_listed_assets(self) -> IngestConfig:
        if len(self.assets) > self.max_assets:
            raise ValueError("ingest.max_assets must be at least the number of ingest.assets")
        names = [source.name for source in self.sources]
        if len(set(names)) < len(names):
            raise ValueError("ingest.sources: each source needs its own name")
        return self


class LevelOverrides(_Section):
    info: float | None = Field(
        default=None, ge=0, le=1, description="Score at which `info` starts."
    )
    warning: float | None = Field(default=None, ge=0, le=1, description="Score for `warning`.")
    critical: float | None = Field(default=None, ge=0, le=1, description="Score for `critical`.")


class AlertsConfig(_Section):
    fire_after: int = Field(
        default=3,
        ge=1,
        description="Consecutive windows at or above the `info` level before an episode fires.",
    )
    resolve_after: int = Field(
        default=10,
        ge=1,
        description="Consecutive windows below the `info` level before a firing episode resolves.",
    )
    top_sensors: int = Field(
        default=3, ge=1, description="Sensors named in an alert, by contribution."
    )
    drift_level: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Drift (0: the recent raw scores are distributed as in training, 1: "
        "entirely apart) at or above which the status counts an asset as drifted. Reporting "
        "only: it changes no score and no alert. 0.5: half of the score distribution has "
        "moved, a stale model rather than noise.",
    )
    levels: LevelOverrides = Field(
        default_factory=LevelOverrides,
        description="Override the model's level thresholds (`[alerts.levels]`, scores in [0, 1]).",
    )


class StorageConfig(_Section):
    data_dir: Path = Field(description="Folder for the SQLite database (`agent.db`).")
    max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Byte budget: above it the oldest readings, then dead letters, then "
        "delivered alerts are evicted.",
    )
    hard_cap_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024 * 1024,
        description="The database file never grows past this; only here are pending "
        "(undelivered) alerts evicted, oldest first.",
    )
    synchronous: Literal["normal", "full"] = Field(
        default="normal",
        description="SQLite `synchronous`: with `normal` a commit survives the agent crashing or "
        "being killed; with `full` also a power cut or an OS crash, at a cost per commit (see "
        "Storage and delivery).",
    )

    @model_validator(mode="after")
    def _cap_above_budget(self) -> StorageConfig:
        if self.hard_cap_bytes < self.max_bytes:
            raise ValueError("storage.hard_cap_bytes must be >= storage.max_bytes")
        return self


class ForwardConfig(_Section):
    max_inflight: int = Field(
        default=20,
        ge=1,
        le=65535,
        description="Alerts published upstream and not yet acknowledged.",
    )
    drain_seconds: float = Field(
        default=5.0,
        ge=0,
        le=20,
        description="On stop, how long to wait for pending alerts to be acknowledged (at most "
        "20, so a stop fits in the unit's 30 s stop timeout).",
    )
    alert_ttl_s: int = Field(
        default=7 * 24 * 3600,
        ge=0,
        le=MQTT_MAX_INTERVAL_S,
        description="An alert not delivered within this many seconds expires (counted, not "
        "sent); also sent as the MQTT 5 message expiry. 0: never.",
    )
    status_interval_s: float = Field(
        default=60.0,
        ge=0.5,
        description="How often the retained status (with buffer figures) is refreshed; at least "
        "0.5 (each refresh is a retained message upstream and a rewrite of `metrics.textfile`).",
    )


class MetricsConfig(_Section):
    listen: str | None = Field(
        default=None,
        pattern=r"^((\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?[0-9]{1,5}$",
        description="Serve `/metrics` on this `PORT` (bound to 127.0.0.1) or `HOST:PORT`; keep "
        "it on loopback unless a firewall guards it. Default: no HTTP server.",
    )
    textfile: Path | None = Field(
        default=None,
        description="Or also: write the metrics to this file (for node_exporter's textfile "
        "collector), replaced atomically every `forward.status_interval_s`. Never inside "
        "`storage.data_dir` (it would replace the agent's own files) nor a file the agent reads "
        "(its config, model, keys, passwords, certificates); local only, a push cannot set it.",
    )

    @model_validator(mode="after")
    def _port_in_range(self) -> MetricsConfig:
        if self.listen is not None and not 0 < int(self.listen.rpartition(":")[2]) < 65536:
            raise ValueError("metrics.listen: the port must be 1 to 65535")
        return self


class FleetConfig(_Section):
    trusted_keys: list[Path] = Field(
        default_factory=list,
        description="Ed25519 public keys (PEM, from `edge-fleet keygen`) whose signed pushes "
        "this device accepts. Empty: the agent takes no pushes.",
    )
    groups: list[Identifier] = Field(
        default_factory=list,
        description="Fleet groups this device belongs to; it takes their pushes (a push to "
        "the device itself overrides its groups').",
    )
    health_check_s: float = Field(
        default=60.0,
        ge=1,
        description="After switching to a pushed version, how long it has to prove healthy "
        "before it becomes the last known good; otherwise the agent rolls back.",
    )
    health_max_critical_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Unhealthy: more than this share of windows scored `critical` during the "
        "health check (an alert storm from a badly calibrated model).",
    )
    health_min_windows: int = Field(
        default=20, ge=1, description="Windows scored before the critical share is judged."
    )
    chunk_timeout_s: float = Field(
        default=600.0,
        ge=1,
        description="A signed push sent in chunks whose chunks have not all come this long "
        "after its envelope is reported `incomplete` and what it held is freed; its retained "
        "envelope is fetched again at the next start or reconnect.",
    )


class HomeAssistantConfig(_Section):
    discovery_prefix: Identifier = Field(
        default="homeassistant",
        description="Home Assistant's MQTT discovery prefix (its own default).",
    )
    node_id: Identifier | None = Field(
        default=None,
        description="The `<node_id>` level of the discovery topics. Default: the device id.",
    )


class AgentConfig(_Section):
    device: DeviceConfig
    local: LocalBrokerConfig = Field(
        default_factory=LocalBrokerConfig,
        description="The gateway's broker, where sensors publish.",
    )
    upstream: BrokerConfig = Field(description="The broker alerts and status go to.")
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    ingest: IngestConfig = Field(
        default_factory=IngestConfig,
        description="What a readings payload may be; anything else is a dead letter with a "
        "reason (see Topics and payloads).",
    )
    model: ModelConfig
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    storage: StorageConfig
    forward: ForwardConfig = Field(default_factory=ForwardConfig)
    fleet: FleetConfig = Field(
        default_factory=FleetConfig,
        description="Signed config and model pushes from the operator (see Fleet).",
    )
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig,
        description="Prometheus metrics (see Operations).",
    )
    home_assistant: HomeAssistantConfig | None = Field(
        default=None,
        description="Announce each asset to Home Assistant by MQTT discovery on the upstream "
        "broker (see Home Assistant). Absent: off.",
    )
    log_level: str = Field(
        default="info",
        pattern=r"^(debug|info|warning|error)$",
        description="stderr log level: debug, info, warning or error.",
    )
    log_format: Literal["kv", "json"] = Field(
        default="kv",
        description="stderr log lines: `kv` (key=value) or `json` (one object per line).",
    )

    @model_validator(mode="after")
    def _levels_ordered(self) -> AgentConfig:
        given = [v for v in self.alerts.levels.model_dump().values() if v is not None]
        if given != sorted(given):
            raise ValueError("alerts.levels must satisfy info <= warning <= critical")
        return self


class ConfigError(ValueError):
    """The config is unusable; the message lists every bad field at once."""


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's document, or a ConfigError naming the file and what is wrong with it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def load_config(
    path: str | Path,
    overrides: dict[str, Any] | None = None,
    overlay: dict[str, Any] | None = None,
) -> AgentConfig:
    """Read, lay the command-line overrides (dotted keys) over the file, then a pushed
    `overlay` over both, resolve paths, validate. A push overrides the command line exactly as
    it overrides the file (issue 13: a `--model` override won over a pushed model that was
    then reported as applied); what a push may not set stays local either way."""
    path = Path(path)
    raw = read_toml(path)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    if overlay:
        raw = _merge(raw, overlay)
    try:
        config = AgentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(path, exc)) from None
    base = path.resolve().parent
    config.model.path = (base / config.model.path).resolve()
    config.storage.data_dir = (base / config.storage.data_dir).resolve()
    config.fleet.trusted_keys = [(base / p).resolve() for p in config.fleet.trusted_keys]
    if config.metrics.textfile is not None:
        config.metrics.textfile = (base / config.metrics.textfile).resolve()
    for broker in (config.local, config.upstream):
        if broker.password_file is not None:
            broker.password_file = (base / broker.password_file).resolve()
        for name in ("ca_file", "cert_file", "key_file"):
            if broker.tls is not None and getattr(broker.tls, name) is not None:
                setattr(broker.tls, name, (base / getattr(broker.tls, name)).resolve())
    _check_paths(path, config)
    _check_formats(path, config)
    return config


def _check_formats(origin: Path, config: AgentConfig) -> None:
    """Each source's payload format exists and can be imported (an optional extra may be
    missing): said at `check-config`, not at the first message."""
    from agent.sources.registry import FormatUnavailable, decoder_factory

    problems = []
    for n, source in enumerate(config.ingest.sources):
        try:
            decoder_factory(source.format)
        except FormatUnavailable as exc:
            problems.append(f"  ingest.sources.{n}.format: {exc}")
    if problems:
        raise ConfigError(f"{origin}: {len(problems)} invalid field(s):\n" + "\n".join(problems))


def _check_paths(origin: Path, config: AgentConfig) -> None:
    """Checks that need the resolved paths (issue 13: a textfile named `agent.db` replaced the
    database with Prometheus text at every status interval)."""
    textfile, data_dir = config.metrics.textfile, config.storage.data_dir
    if textfile is not None and textfile.resolve().is_relative_to(data_dir.resolve()):
        raise ConfigError(
            f"{origin}: 1 invalid field(s):\n  metrics.textfile: {textfile} is inside "
            f"storage.data_dir {data_dir}; write it elsewhere"
        )
    # Nor a file the agent reads: the config or model replaced by metrics stops the next start.
    if textfile is not None and textfile.resolve() in {
        p.resolve() for p in _files_read(origin, config)
    }:
        raise ConfigError(
            f"{origin}: 1 invalid field(s):\n  metrics.textfile: {textfile} is a file the "
            "agent reads (its config, model, a key, password or certificate); write it elsewhere"
        )


def _files_read(origin: Path, config: AgentConfig) -> list[Path]:
    """The files the agent reads, besides those in its data folder."""
    return [origin, config.model.path, *secret_files(config)]


def secret_files(config: AgentConfig) -> list[Path]:
    """The files the agent's trust and logins are in: trusted keys, passwords, certificates."""
    files: list[Path | None] = [*config.fleet.trusted_keys]
    for broker in (config.local, config.upstream):
        files.append(broker.password_file)
        if broker.tls is not None:
            files += [broker.tls.ca_file, broker.tls.cert_file, broker.tls.key_file]
    return [Path(f) for f in files if f is not None]


def path_keys(model: type[BaseModel] = AgentConfig, prefix: str = "") -> list[str]:
    """Every dotted key whose value names a file or folder, from the schema itself, so that a
    path field added later is covered too (pushes may not set any: `agent.pushes`)."""
    keys: list[str] = []
    for name, info in model.model_fields.items():
        types = (info.annotation, *get_args(info.annotation))
        nested = [t for t in types if isinstance(t, type) and issubclass(t, BaseModel)]
        if nested:
            keys += path_keys(nested[0], f"{prefix}{name}.")
        elif any(t is Path or get_args(t) == (Path,) for t in types):
            keys.append(f"{prefix}{name}")
    return keys


def format_errors(origin: Path | str, exc: ValidationError) -> str:
    lines = [f"{origin}: {exc.error_count()} invalid field(s):"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def parse_host_port(value: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`) from the command line."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` over `base`, table by table."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
