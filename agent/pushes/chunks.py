"""A verified push too big for one message: its chunks, asked for a few at a time and joined
once all have come (checked against the signed sha256)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import islice

from agent.envelope import Envelope, check_content

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

    def wanted(self, window: int) -> list[int]:
        """The first `window` chunk indexes not here yet."""
        while self.first_missing in self.parts:
            self.first_missing += 1
        missing = (
            i for i in range(self.first_missing, self.envelope.chunks) if i not in self.parts
        )
        return list(islice(missing, window))


def stream_of(envelope: Envelope) -> str:
    return f"{envelope.target}/{envelope.kind}"


def join_chunks(waiting: Chunked) -> Envelope | None:
    """The envelope with its content, once every chunk is here (checked against the sha256)."""
    env = waiting.envelope
    if not all(i in waiting.parts for i in range(env.chunks)):
        return None
    content = b"".join(waiting.parts[i] for i in range(env.chunks))
    check_content(content, env.sha256, env.size)
    return Envelope(**{**asdict(env), "content": content})
