"""Replace a file so that a reader, a crash or a power cut sees the old or the new one, never
half: a temp file beside it, fsync, rename, fsync the folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def replacing(path: str | Path, mode: str = "wb", **open_args: Any) -> Iterator[IO[Any]]:
    """A file to write that takes `path`'s place only when the block ends without an error
    (for writers that stream, such as a CSV export); on an error the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, mode, **open_args) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_atomically(path: str | Path, data: bytes) -> Path:
    with replacing(path) as f:
        f.write(data)
    return Path(path)
