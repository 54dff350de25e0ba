#!/usr/bin/env python3
"""Checks tests/vectors/group.json from protocol/README.md alone (no Kith code), with the
`cryptography` package's Ed25519 and ChaCha20-Poly1305 and hashlib's BLAKE2s.

It decodes every state and message following the README's bincode layout, re-encodes them,
checks the signatures, digests, chain keys, AEAD and transport ids, and re-signs with the
secret keys in the file (Ed25519 is deterministic, so the signatures must be identical).

Run from the repository root: python3 protocol/tests/vectors/open_group_vectors.py
Exits non-zero on the first mismatch.
"""
import hashlib
import json
import os
import struct
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

USER_ID_PREFIX = bytes.fromhex("002408011220")
CHANGES = ["Create", "Add", "Remove", "Leave", "Rename", "Promote"]


class Reader:
    """bincode 2 `standard()`: varint integers, length-prefixed byte strings (README §1)."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def varint(self) -> int:
        b = self.take(1)[0]
        if b < 251:
            return b
        return int.from_bytes(self.take({251: 2, 252: 4, 253: 8}[b]), "little")

    def bytes(self) -> bytes:
        return self.take(self.varint())

    def user(self) -> bytes:
        u = self.bytes()
        assert len(u) == 38 and u.startswith(USER_ID_PREFIX), "an Ed25519 UserId"
        return u

    def end(self):
        assert self.at == len(self.data), "trailing bytes"


def varint(n: int) -> bytes:
    if n <= 250:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfb" + struct.pack("<H", n)
    if n < 1 << 32:
        return b"\xfc" + struct.pack("<I", n)
    return b"\xfd" + struct.pack("<Q", n)


def lp(b: bytes) -> bytes:
    return varint(len(b)) + b


def h(label: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(label + data).digest()


def raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def decode_state(data: bytes) -> dict:
    r = Reader(data)
    s = {"group": r.take(16), "epoch": r.varint(), "parent": r.take(32), "author": r.user()}
    tag = r.varint()
    change = CHANGES[tag]
    arg = None
    if change in ("Add", "Remove", "Promote"):
        arg = r.user()
    elif change == "Rename":
        arg = r.bytes().decode()
    s["change"], s["arg"] = change, arg
    s["name"] = r.bytes().decode()
    s["members"] = [r.user() for _ in range(r.varint())]
    s["admins"] = [r.user() for _ in range(r.varint())]
    r.end()
    # Re-encode: the layout is exactly this, in the shortest form.
    change_bytes = varint(tag) + (lp(arg.encode()) if isinstance(arg, str) else lp(arg) if arg else b"")
    again = (s["group"] + varint(s["epoch"]) + s["parent"] + lp(s["author"]) + change_bytes
             + lp(s["name"].encode()) + varint(len(s["members"])) + b"".join(map(lp, s["members"]))
             + varint(len(s["admins"])) + b"".join(map(lp, s["admins"])))
    assert again == data, "state re-encodes"
    assert s["members"] == sorted(set(s["members"])) and s["admins"] == sorted(set(s["admins"]))
    assert all(a in s["members"] for a in s["admins"])
    return s


def main(path: str) -> None:
    v = json.load(open(path))
    secrets, ids = {}, {}
    for i in v["identities"]:
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(i["ed25519_secret_hex"]))
        uid = bytes.fromhex(i["user_id_hex"])
        assert uid == USER_ID_PREFIX + raw_public(key), i["name"]
        secrets[i["name"]], ids[i["name"]] = key, uid

    previous = None
    for sv in v["states"]:
        state = bytes.fromhex(sv["state_hex"])
        s = decode_state(state)
        sig = bytes.fromhex(sv["signature_hex"])
        assert s["author"] == ids[sv["author"]]
        signed_input = b"kith-group-state/1" + state
        Ed25519PublicKey.from_public_bytes(s["author"][6:]).verify(sig, signed_input)
        assert secrets[sv["author"]].sign(signed_input) == sig, "deterministic signature"
        signed = state + lp(sig)
        assert signed == bytes.fromhex(sv["signed_state_hex"])
        digest = h(b"kith-group-digest/1", signed)
        assert digest.hex() == sv["digest_hex"]
        if previous is None:
            assert s["epoch"] == 0 and s["parent"] == bytes(32) and s["change"] == "Create"
            assert s["admins"] == [s["author"]] and s["author"] in s["members"]
        else:
            prev_state, prev_digest = previous
            assert s["group"] == prev_state["group"] and s["epoch"] == prev_state["epoch"] + 1
            assert s["parent"] == prev_digest
            assert prev_state["author"] in prev_state["admins"]
            if s["change"] == "Add":
                assert s["members"] == sorted(prev_state["members"] + [s["arg"]])
        previous = (s, digest)
        print("ok state", s["epoch"], s["change"], s["name"], len(s["members"]), "members")

    k = v["sender_key"]
    signing = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(k["signing_secret_hex"]))
    assert raw_public(signing).hex() == k["signing_key_hex"]
    distribution = (bytes.fromhex(k["group_hex"]) + varint(k["key_id"]) + varint(k["iteration"])
                    + bytes.fromhex(k["chain_key_hex"]) + raw_public(signing))
    assert distribution.hex() == k["distribution_hex"]
    verifier = Ed25519PublicKey.from_public_bytes(raw_public(signing))
    sender = ids[k["sender"]]

    chain = bytes.fromhex(k["chain_key_hex"])
    for i, m in enumerate(v["messages"]):
        assert m["iteration"] == k["iteration"] + i and chain.hex() == m["chain_key_hex"]
        key = h(b"kith-sk-message/1", chain)
        assert key.hex() == m["message_key_hex"]
        chain = h(b"kith-sk-chain/1", chain)
        assert chain.hex() == m["next_chain_key_hex"]
        nonce = struct.pack("<I", m["iteration"]) + bytes(8)
        assert nonce.hex() == m["nonce_hex"]
        mid = bytes.fromhex(m["id_hex"])
        fields = (bytes.fromhex(k["group_hex"]) + mid + varint(m["epoch"]) + varint(m["key_id"])
                  + varint(m["iteration"]))
        header = fields + lp(sender)
        assert header.hex() == m["header_hex"]
        ct = bytes.fromhex(m["ciphertext_hex"])
        plain = ChaCha20Poly1305(key).decrypt(nonce, ct, header)
        assert plain.hex() == m["plaintext_hex"]
        sig = bytes.fromhex(m["signature_hex"])
        verifier.verify(sig, b"kith-group-msg/1" + header + ct)
        assert signing.sign(b"kith-group-msg/1" + header + ct) == sig
        assert (fields + lp(ct) + lp(sig)).hex() == m["message_hex"]
        for t in m["transport_ids"]:
            tid = h(b"kith-group-transport/1", mid + ids[t["member"]])[:16]
            assert tid.hex() == t["id_hex"]
        # Plaintext { sent_at_ms, RawPayload { kind, body } }, kind 1 = Text { body, client_meta }.
        r = Reader(plain)
        sent_at, kind, body = r.varint(), r.varint(), r.bytes()
        r.end()
        assert kind == 1
        t = Reader(body)
        text, meta = t.bytes().decode(), t.bytes().decode()
        t.end()
        print("ok message", m["iteration"], sent_at, repr(text), meta)


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "group.json"))
