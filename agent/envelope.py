"""Signed push envelopes: what an operator sends a fleet, and how a gateway decides to trust it.

An envelope is one JSON object. Its Ed25519 signature covers the canonical JSON (sorted keys, no
spaces) of every other field — kind, target, version, creation time, the content's sha256 and
size, and the content itself when it travels inline — so nothing in it can be changed or moved
to another target. Large content travels in chunks beside the envelope; the signed sha256 is
what makes them trustworthy.

The agent trusts only the public keys in its own config; a push signed by any other key, or not
signed, or altered, is rejected with the reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.isotime import now_iso

if TYPE_CHECKING:  # imported where used: an agent that takes no pushes never loads it (8 MiB)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

KINDS = ("config", "model", "rollback")
MAX_CONTENT_BYTES = 64 * 1024 * 1024  # the model size limit; configs are far smaller
# The largest chunk (and inline content) `edge-fleet push` sends.
MAX_CHUNK_BYTES = 256 * 1024
# The largest fleet message the agent reads: a chunk of MAX_CHUNK_BYTES in base64 (4/3) plus
# its JSON, topic and MQTT header (under 1 KiB), with headroom. The upstream CONNECT asks the
# broker for no larger packet, so that a bigger one is dropped there, never read (issue #13).
MAX_MESSAGE_BYTES = 512 * 1024
_FIELDS = ("kind", "target", "version", "created_at", "sha256", "size", "chunks", "key_id")


class PushRejected(ValueError):
    """The push is not applied; the message is the reason reported upstream."""


@dataclass(frozen=True)
class Envelope:
    kind: str  # config | model | rollback
    target: str  # device:<id> | group:<name>
    version: int
    created_at: str
    sha256: str
    size: int
    chunks: int  # 0: the content is inline
    key_id: str
    content: bytes | None  # inline content, or None until the chunks are joined


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a key: the first 16 hex digits of the sha256 of its raw bytes."""
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def write_keypair(folder: Path, name: str = "fleet") -> tuple[Path, Path]:
    """`<name>.key` (PKCS#8 PEM, mode 0600) and `<name>.pub.pem`; never overwrites."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / f"{name}.key", folder / f"{name}.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; not overwriting a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with open(private_path, "xb", opener=lambda p, f: os.open(p, f, 0o600)) as out:
        out.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def seal(
    key: Ed25519PrivateKey,
    kind: str,
    target: str,
    version: int,
    content: bytes,
    chunk_bytes: int = 0,
) -> tuple[dict[str, object], list[bytes]]:
    """The signed envelope and, when the content is over `chunk_bytes` (> 0), its chunks."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    chunks = (
        [content[i : i + chunk_bytes] for i in range(0, len(content), chunk_bytes)]
        if 0 < chunk_bytes < len(content)
        else []
    )
    doc: dict[str, object] = {
        "kind": kind,
        "target": target,
        "version": version,
        "created_at": now_iso("milliseconds"),
        "sha256": hashlib.sha256(content).hexdigest(),
        "size": len(content),
        "chunks": len(chunks),
        "key_id": key_id(key.public_key()),
    }
    if not chunks:
        doc["content"] = base64.b64encode(content).decode()
    doc["signature"] = base64.b64encode(key.sign(_signed_bytes(doc))).decode()
    return doc, chunks


def open_envelope(payload: bytes, trusted: dict[str, Ed25519PublicKey]) -> Envelope:
    """Parse and verify; PushRejected says why it is not trusted."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PushRejected(f"not a JSON envelope: {exc}") from None
    if not isinstance(doc, dict):
        raise PushRejected("not a JSON envelope object")
    if "signature" not in doc:
        raise PushRejected("unsigned push")
    missing = [f for f in _FIELDS if f not in doc]
    if missing:
        raise PushRejected(f"envelope lacks {', '.join(missing)}")
    from cryptography.exceptions import InvalidSignature

    public = trusted.get(str(doc["key_id"]))
    if public is None:
        raise PushRejected(f"signed by an untrusted key ({str(doc['key_id'])[:16]})")
    try:
        public.verify(base64.b64decode(str(doc["signature"]), validate=True), _signed_bytes(doc))
    except (InvalidSignature, binascii.Error, ValueError):
        raise PushRejected("bad signature (altered, or signed by another key)") from None
    return _envelope(doc)


def _envelope(doc: dict[str, object]) -> Envelope:
    kind, version, size, chunks = doc["kind"], doc["version"], doc["size"], doc["chunks"]
    if kind not in KINDS:
        raise PushRejected(f"unknown kind {kind!r}")
    if not all(type(v) is int and v >= 0 for v in (version, size, chunks)):
        raise PushRejected("version, size and chunks must be non-negative integers")
    if size > MAX_CONTENT_BYTES:
        raise PushRejected(f"content of {size} bytes is over the {MAX_CONTENT_BYTES} limit")
    content = None
    if chunks == 0:
        try:
            content = base64.b64decode(str(doc.get("content", "")), validate=True)
        except (binascii.Error, ValueError):
            raise PushRejected("content is not base64") from None
        check_content(content, str(doc["sha256"]), size)
    return Envelope(
        str(kind),
        str(doc["target"]),
        version,
        str(doc["created_at"]),
        str(doc["sha256"]),
        size,
        chunks,
        str(doc["key_id"]),
        content,
    )


def check_content(content: bytes, sha256: str, size: int) -> None:
    if len(content) != size or hashlib.sha256(content).hexdigest() != sha256:
        raise PushRejected("content does not match the signed sha256")


def _signed_bytes(doc: dict[str, object]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
