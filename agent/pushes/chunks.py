"""A verified push too big for one message: its chunks, asked for a few at a time and joined
once all have come (checked against the signed sha256)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import asdict, dataclass, field
from itertools import islice

from agent.envelope import Envelope, PushRejected, check_content

log = logging.getLogger(__name__)

# A chunk index this high is no push of ours: its topic is dropped unread.
MAX_CHUNKS = 100_000

# Chunks of a verified push asked for at a time (each at most MAX_MESSAGE_BYTES on the wire).
CHUNK_WINDOW = 4


@dataclass
class Chunked:
    """A verified envelope waiting for its chunks, which are asked for from `topic`/chunk/<n>
    a few at a time until `deadline` (monotonic)."""

    envelope: Envelope
    stream: str
    topic: str
    deadline: float
    parts: dict[int, bytes] = field(default_factory=dict)
    held: int = 0  # bytes in parts
    first_missing: int = 0

    @property
    def kind(self) -> str:
        """The kind of the topic it came on (a rollback envelope names its own)."""
        return self.stream.rsplit("/", 1)[1]

    def wanted(self, window: int) -> list[int]:
        """The first `window` chunk indexes not here yet."""
        while self.first_missing in self.parts:
            self.first_missing += 1
        missing = (
            i for i in range(self.first_missing, self.envelope.chunks) if i not in self.parts
        )
        return list(islice(missing, window))


def join_chunks(waiting: Chunked) -> Envelope | None:
    """The envelope with its content, once every chunk is here (checked against the sha256)."""
    env = waiting.envelope
    if not all(i in waiting.parts for i in range(env.chunks)):
        return None
    content = b"".join(waiting.parts[i] for i in range(env.chunks))
    check_content(content, env.sha256, env.size)
    return Envelope(**{**asdict(env), "content": content})


class ChunksRefused(PushRejected):
    """The chunks of `envelope` cannot make its content; it is freed. `kind` is the one to
    report it under."""

    def __init__(self, reason: str, envelope: Envelope, kind: str) -> None:
        super().__init__(reason)
        self.envelope = envelope
        self.kind = kind


class Reassembly:
    """The verified envelopes waiting for their chunks: at most one per stream (so bounded by
    the topics subscribed to), each until `timeout_s` after its envelope came. Nothing from a
    chunk topic is kept before its envelope is verified (issue #13: junk chunks held for
    envelopes that never come exhausted memory)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._waiting: dict[str, Chunked] = {}

    def topics(self) -> set[str]:
        """The chunk topics the verified envelopes waiting now need next."""
        return {
            f"{waiting.topic}/chunk/{index}"
            for waiting in self._waiting.values()
            for index in waiting.wanted(CHUNK_WINDOW)
        }

    def start(self, env: Envelope, stream: str, topic: str, now: float) -> None:
        """Start asking for the chunks of a verified envelope (see `topics`)."""
        waiting = self._waiting.get(stream)
        if waiting is not None and (waiting.envelope.version, waiting.envelope.sha256) == (
            env.version,
            env.sha256,
        ):
            return  # its retained copy again: keep the chunks that came
        if not 0 < env.chunks <= env.size:
            raise PushRejected(f"{env.chunks} chunks cannot hold {env.size} bytes")
        self._waiting[stream] = Chunked(env, stream, topic, now + self.timeout_s)
        log.info("push %s v%d from %s: fetching %d chunks", env.kind, env.version, env.target,
                 env.chunks)  # fmt: skip

    def add(self, stream: str, index: int, payload: bytes) -> Envelope | None:
        """A chunk of a verified envelope waiting for it (anything else is dropped unread);
        the envelope with its content once every chunk is here. `ChunksRefused` when they
        cannot make it."""
        waiting = self._waiting.get(stream)
        if waiting is None or index >= waiting.envelope.chunks or index in waiting.parts:
            return None
        if not payload:
            return None
        try:
            doc = json.loads(payload)
            sha, data = str(doc["sha256"]), base64.b64decode(doc["data"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None  # not one of ours; the sha256 check on joining catches anything wrong
        env = waiting.envelope
        if sha != env.sha256:
            return None
        if waiting.held + len(data) > env.size:
            del self._waiting[stream]
            raise ChunksRefused(
                f"chunks hold more than the signed {env.size} bytes", env, waiting.kind
            )
        waiting.parts[index] = data
        waiting.held += len(data)
        try:
            joined = join_chunks(waiting)
        except PushRejected as exc:
            del self._waiting[stream]
            raise ChunksRefused(str(exc), env, waiting.kind) from None
        if joined is not None:
            del self._waiting[stream]
        return joined

    def expired(self, now: float) -> list[Chunked]:
        """The pushes whose chunks did not all come in time, freed."""
        late = [waiting for waiting in self._waiting.values() if now >= waiting.deadline]
        for waiting in late:
            del self._waiting[waiting.stream]
        return late
