"""The `sparkplug_b` source format: agent.sparkplug's decoder behind the source interface.

The topic is the Sparkplug namespace (`spBv1.0/<group>/#`), so the asset is the edge node or
device the message is from (`sparkplug.asset`), not a topic binding. Times are the metrics'
milliseconds, already converted (`Seconds`); a reading carries every sensor known so far
(births and report by exception), and the framework checks and completes it. Rebirth requests
go out as replies.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.config import IngestConfig, SourceConfig, SparkplugConfig
from agent.sources import Decoded, Incoming, Reply, Row, Seconds
from agent.sparkplug.decoder import Decoder


class SparkplugSource:
    def __init__(self, source: SourceConfig, sensors: Sequence[str], ingest: IngestConfig) -> None:
        options = source.sparkplug or SparkplugConfig()
        # `sensors` maps model sensor -> metric name, as for every source. Training means are
        # the framework's business (`ingest.missing_sensor`): not used here.
        metrics = {metric: sensor for sensor, metric in source.sensors.items()}
        self.decoder = Decoder(list(sensors), options, ingest, [0.0] * len(sensors), metrics)

    def decode(self, message: Incoming) -> Decoded:
        rows, problem = self.decoder.rows(message.topic, message.payload, message.received_at)
        return Decoded(
            rows=[Row(r.asset, Seconds(r.ts), dict(r.values)) for r in rows],
            dead=[problem] if problem else [],
            replies=[Reply(topic, payload) for topic, payload in self.decoder.take_requests()],
        )

    def snapshot(self) -> str:
        """The births and last values, for the runtime to keep across a restart (see
        agent.sparkplug.state); `changed` says whether there is anything new to keep."""
        return self.decoder.snapshot()

    def restore(self, snapshot: str) -> None:
        self.decoder.restore(snapshot)

    @property
    def changed(self) -> bool:
        return self.decoder.changed


def make_decoder(
    source: SourceConfig, sensors: Sequence[str], ingest: IngestConfig
) -> SparkplugSource:
    return SparkplugSource(source, sensors, ingest)
