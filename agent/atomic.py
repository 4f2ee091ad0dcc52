"""Replace a file so that a reader, a crash or a power cut sees the old or the new one, never
half: a temp file beside it, fsync, rename, fsync the folder.

`mkstemp` creates the temp file 0600 whatever the umask, and the rename kept that mode, so the
metrics textfile could not be read by node_exporter under the unit's `UMask=0027` (issue 17,
item 4). The file gets the mode `open()` would give a new file: 0666 less the umask. Nothing
written through here holds a secret (the one private file, `edge-fleet keygen`'s key, is
created 0600 by agent/envelope.py).
"""

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
        os.fchmod(fd, 0o666 & ~current_umask())
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


def current_umask() -> int:
    """The process's umask, read without changing it: `os.umask` can only be read by setting
    it, and another thread creating a file in that instant would get the wrong mode."""
    status = Path("/proc/self/status")
    if status.is_file():  # Linux since 4.7
        for line in status.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return _umask_by_setting()


def _umask_by_setting() -> int:
    """Elsewhere: set and restore it, through the most private value in between."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask
