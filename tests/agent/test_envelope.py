"""Envelopes: what a signature covers, and what a gateway refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.envelope import (
    PushRejected,
    key_id,
    load_private_key,
    load_public_key,
    open_envelope,
    seal,
    write_keypair,
)
from agent.pushes.state import STATE_FILE, FleetState


@pytest.fixture
def pair(tmp_path: Path):
    private, public = write_keypair(tmp_path)
    key = load_public_key(public)
    return load_private_key(private), {key_id(key): key}


def test_a_sealed_envelope_opens_with_its_content(pair):
    key, trusted = pair
    doc, chunks = seal(key, "config", "device:gw-1", 5, b"[alerts]\\nfire_after = 4\\n")
    env = open_envelope(json.dumps(doc).encode(), trusted)
    assert not chunks and env.version == 5 and env.content == b"[alerts]\\nfire_after = 4\\n"


@pytest.mark.parametrize(
    ("field", "value"),
    [("target", "group:everyone"), ("version", 99), ("kind", "model"), ("content", "e30=")],
)
def test_changing_any_signed_field_breaks_the_signature(pair, field, value):
    key, trusted = pair
    doc, _ = seal(key, "config", "device:gw-1", 5, b"x = 1\\n")
    doc[field] = value
    with pytest.raises(PushRejected, match="bad signature"):
        open_envelope(json.dumps(doc).encode(), trusted)


def test_unsigned_garbage_and_unknown_keys_are_refused(pair, tmp_path: Path):
    key, trusted = pair
    doc, _ = seal(key, "config", "device:gw-1", 5, b"x = 1\\n")
    unsigned = {k: v for k, v in doc.items() if k != "signature"}
    with pytest.raises(PushRejected, match="unsigned"):
        open_envelope(json.dumps(unsigned).encode(), trusted)
    with pytest.raises(PushRejected, match="not a JSON envelope"):
        open_envelope(b"\\xff\\x00", trusted)
    other, _ = write_keypair(tmp_path / "other")
    foreign, _ = seal(load_private_key(other), "config", "device:gw-1", 5, b"x = 1\\n")
    with pytest.raises(PushRejected, match="untrusted key"):
        open_envelope(json.dumps(foreign).encode(), trusted)


def test_large_content_travels_in_chunks_covered_by_the_signed_sha256(pair):
    key, trusted = pair
    content = bytes(range(256)) * 40
    doc, chunks = seal(key, "model", "group:line-1", 8, content, chunk_bytes=1000)
    assert len(chunks) == 11 and b"".join(chunks) == content and "content" not in doc
    env = open_envelope(json.dumps(doc).encode(), trusted)
    assert env.content is None and env.chunks == 11 and env.size == len(content)


def test_keygen_never_overwrites_a_key(tmp_path: Path):
    write_keypair(tmp_path)
    with pytest.raises(FileExistsError):
        write_keypair(tmp_path)
    assert oct((tmp_path / "fleet.key").stat().st_mode & 0o777) == "0o600"


def test_a_damaged_fleet_state_is_moved_aside_and_the_local_config_runs(tmp_path: Path):
    folder = tmp_path / "fleet"
    folder.mkdir()
    (folder / STATE_FILE).write_text('{"current": {"config": {"version": 3')  # cut short
    state = FleetState.load(folder)
    assert state.current == {} and state.pending is None
    assert not (folder / STATE_FILE).exists()
    assert len(list(folder.glob(f"{STATE_FILE}.damaged-*"))) == 1
