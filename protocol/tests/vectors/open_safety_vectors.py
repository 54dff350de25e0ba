#!/usr/bin/env python3
"""Checks tests/vectors/safety.json from protocol/README.md §21 alone, with hashlib."""
import hashlib
import json
import pathlib

ITERATIONS = 5200


def party(user_id: bytes) -> str:
    key = user_id[-32:]
    h = hashlib.sha512(b"\x00\x00" + key + user_id).digest()
    for _ in range(ITERATIONS):
        h = hashlib.sha512(h + key).digest()
    return "".join(f"{int.from_bytes(h[i:i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5))


vectors = json.loads((pathlib.Path(__file__).parent / "safety.json").read_text())
for v in vectors:
    a, b = bytes.fromhex(v["a_user_id_hex"]), bytes.fromhex(v["b_user_id_hex"])
    da, db = party(a), party(b)
    assert (da, db) == (v["a_digits"], v["b_digits"]), v
    number = "".join(sorted([da, db]))
    assert number == v["safety_number"], v
    assert " ".join(number[i:i + 5] for i in range(0, 60, 5)) == v["display"], v
print(f"{len(vectors)} safety number vectors check out")
