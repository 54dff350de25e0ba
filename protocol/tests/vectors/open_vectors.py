#!/usr/bin/env python3
"""Open every vector in sealed.json with an independent Noise implementation.

Uses the `noise` package (pip install noiseprotocol), which shares no code with snow, and
decodes what is inside following protocol/README.md only: the bincode layout, the key bundle
and its signature, the user id. Usage:

    pip install noiseprotocol
    python3 protocol/tests/vectors/open_vectors.py [path/to/sealed.json]

Exits non-zero on the first mismatch.
"""

import hashlib
import json
import os
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from noise.connection import Keypair, NoiseConnection


class Reader:
    """bincode 2 `standard()`: little-endian, varint integers (README: "Encoding")."""

    def __init__(self, data: bytes):
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        b = self.u8()
        if b < 251:
            return b
        width = {251: 2, 252: 4, 253: 8, 254: 16}.get(b)
        if width is None:
            raise ValueError("invalid varint tag 255")
        return int.from_bytes(self.take(width), "little")

    def bytes(self) -> bytes:
        return self.take(self.varint())

    def string(self) -> str:
        return self.bytes().decode("utf-8")

    def done(self) -> bool:
        return self.at == len(self.data)


def varint(n: int) -> bytes:
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfb" + n.to_bytes(2, "little")
    if n < 1 << 32:
        return b"\xfc" + n.to_bytes(4, "little")
    return b"\xfd" + n.to_bytes(8, "little")


def read_bundle(r: Reader) -> dict:
    return {
        "user": r.bytes(),
        "identity_key": r.take(32),
        "static_key": r.take(32),
        "prekey_id": r.varint(),
        "prekey_created_at_ms": r.varint(),
        "prekey_public": r.take(32),
        "mailboxes": [read_mailbox_peer(r) for _ in range(r.varint())],
        "issued_at_ms": r.varint(),
        "signature": r.bytes(),
    }


def read_mailbox_peer(r: Reader) -> dict:
    return {"peer": r.bytes(), "addrs": [r.string() for _ in range(r.varint())]}


def mailbox_peer_bytes(p: dict) -> bytes:
    out = varint(len(p["peer"])) + p["peer"] + varint(len(p["addrs"]))
    for a in p["addrs"]:
        out += varint(len(a.encode())) + a.encode()
    return out


def bundle_signing_bytes(b: dict) -> bytes:
    return (
        b"kith-bundle/2\x00"
        + varint(len(b["user"])) + b["user"]
        + b["identity_key"]
        + b["static_key"]
        + varint(b["prekey_id"]) + varint(b["prekey_created_at_ms"]) + b["prekey_public"]
        + varint(len(b["mailboxes"])) + b"".join(mailbox_peer_bytes(p) for p in b["mailboxes"])
        + varint(b["issued_at_ms"])
    )


def describe_payload(kind: int, body: bytes) -> str:
    r = Reader(body)
    if kind == 1:
        text, meta = r.string(), r.string()
        out = f"text of {len(text.encode())} bytes, client_meta {meta!r}"
    elif kind == 2:
        r.take(32)  # hash
        size, chunk = r.varint(), r.varint()
        mime, name = r.string(), r.string()
        r.take(32)  # key
        preview, caption = r.bytes(), r.string()
        out = f"media {name!r} ({mime}, {size} bytes, chunks of {chunk}, preview {len(preview)} bytes, caption {caption!r})"
    elif kind == 3:
        which = {0: "delivered", 1: "read"}[r.varint()]
        ids = [r.take(16).hex() for _ in range(r.varint())]
        out = f"{which} receipt for {len(ids)} ids"
    else:
        return f"unknown kind {kind}"
    if not r.done():
        raise ValueError("trailing bytes in payload body")
    return out


def open_vector(i: int, v: dict) -> None:
    prologue = bytes.fromhex(v["prologue_hex"])
    private = bytes.fromhex(v["recipient_static_private_hex"])
    sealed = bytes.fromhex(v["sealed_body_hex"])
    expected = bytes.fromhex(v["payload_hex"])

    conn = NoiseConnection.from_name(v["pattern"].encode())
    conn.set_as_responder()
    conn.set_keypair_from_private_bytes(Keypair.STATIC, private)
    conn.set_prologue(prologue)
    conn.start_handshake()
    hs = conn.noise_protocol.handshake_state  # kept to read `rs` after the handshake
    payload = bytes(conn.read_message(sealed))
    assert conn.handshake_finished, "Noise X is one message"
    assert payload == expected, f"vector {i}: payload differs from payload_hex"
    remote_static = hs.rs.public_bytes

    # HandshakePayload = KeyBundle, chain_seed [32], Plaintext { sent_at_ms, RawPayload }.
    r = Reader(payload)
    bundle = read_bundle(r)
    chain_seed = r.take(32)
    sent_at_ms = r.varint()
    kind = r.varint()
    body = r.bytes()
    assert r.done(), f"vector {i}: trailing bytes"

    # The bundle authenticates the sender: its static key is the Noise static key, its user id
    # is the identity key's PeerId, and the identity key signed it.
    assert bundle["static_key"] == remote_static, f"vector {i}: static key is not the Noise rs"
    assert bundle["user"] == b"\x00\x24\x08\x01\x12\x20" + bundle["identity_key"], f"vector {i}: user id"
    try:
        Ed25519PublicKey.from_public_bytes(bundle["identity_key"]).verify(
            bundle["signature"], bundle_signing_bytes(bundle)
        )
    except InvalidSignature:
        raise AssertionError(f"vector {i}: bundle signature does not verify")

    # The prologue: "kith-seal/1\0" ‖ version ‖ id ‖ len ‖ recipient ‖ expires (u64 BE).
    assert prologue.startswith(b"kith-seal/1\x00\x01"), f"vector {i}: prologue context/version"
    rlen = prologue[29]
    assert len(prologue) == 30 + rlen + 8, f"vector {i}: prologue length"
    expires = int.from_bytes(prologue[30 + rlen:], "big")

    # And the library does authenticate: a changed prologue or body byte is refused.
    for bad_prologue, bad_sealed in [
        (prologue[:-1] + bytes([prologue[-1] ^ 1]), sealed),
        (prologue, sealed[:50] + bytes([sealed[50] ^ 1]) + sealed[51:]),
    ]:
        c = NoiseConnection.from_name(v["pattern"].encode())
        c.set_as_responder()
        c.set_keypair_from_private_bytes(Keypair.STATIC, private)
        c.set_prologue(bad_prologue)
        c.start_handshake()
        try:
            c.read_message(bad_sealed)
        except Exception:
            pass
        else:
            raise AssertionError(f"vector {i}: a tampered message opened")

    session_id = hashlib.blake2s(b"\x00", key=chain_seed).digest()[:16]
    print(
        f"vector {i}: ok — {len(sealed)}-byte Noise message; "
        f"{describe_payload(kind, body)}; sent_at_ms {sent_at_ms}, expires {expires}, "
        f"session id {session_id.hex()}"
    )


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "sealed.json")
    with open(path) as f:
        vectors = json.load(f)
    for i, v in enumerate(vectors):
        open_vector(i, v)
    print(f"all {len(vectors)} vectors opened with the python `noise` library")
    return 0


if __name__ == "__main__":
    sys.exit(main())
