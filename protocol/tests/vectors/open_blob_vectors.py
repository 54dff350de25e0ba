"""Checks tests/vectors/blob.json from protocol/README.md alone (no Kith code), with the
`cryptography` package's ChaCha20-Poly1305 and hashlib's BLAKE2s.

Run from the repository root: python3 protocol/tests/vectors/open_blob_vectors.py
"""
import os
import json, hashlib, struct

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
vs = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'blob.json')))
for v in vs:
    key = bytes.fromhex(v['key_hex']); size=v['size']; cs=v['chunk_size']
    ct = bytes.fromhex(v['ciphertext_hex']); pt = bytes.fromhex(v['plaintext_hex'])
    assert hashlib.blake2s(ct).hexdigest() == v['hash_hex']
    count = max(1, -(-size // cs))
    out = b''; at = 0
    a = ChaCha20Poly1305(key)
    for i in range(count):
        last = i == count - 1
        plen = min(cs, size - i*cs)
        c = ct[at:at+plen+16]; at += plen+16
        nonce = struct.pack('<Q', i) + bytes([last]) + b'\0\0\0'
        aad = b'kith-blob-v1' + struct.pack('<QIQB', size, cs, i, last)
        out += a.decrypt(nonce, c, aad)
    assert at == len(ct) and out == pt
    print('ok', size, cs, count)
