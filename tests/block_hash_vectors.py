#!/usr/bin/python3
"""Prints the known vectors of tests/test_block_hash.cpp, computed without pkv.

SHA-256 comes from Python's hashlib, XXH3-128 (seed 0) from the `xxhsum -H2` command line tool
(Debian package `xxhash`; needed only to regenerate these constants, not to build or test pkv).
Chain: h_{-1} = H(salt), h_i = H(parent digest bytes || block tokens as little-endian u32); the
parent contributes 32 bytes for sha256 and its 16 canonical bytes for xxh3_128.
Run: /usr/bin/python3 tests/block_hash_vectors.py
"""
import hashlib
import os
import struct
import subprocess
import tempfile


def xxh3_128(data: bytes) -> bytes:
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
    try:
        out = subprocess.run(["xxhsum", "-H2", f.name], capture_output=True, text=True, check=True)
        return bytes.fromhex(out.stdout.split()[0])
    finally:
        os.unlink(f.name)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


ALGOS = [("sha256", sha256, 32), ("xxh3_128", xxh3_128, 16)]


def le(tokens) -> bytes:
    return b"".join(struct.pack("<I", t) for t in tokens)


def chain(H, size, salt: bytes, tokens, block):
    h = H(salt)
    out = [h]
    for i in range(len(tokens) // block):
        h = H(h[:size] + le(tokens[i * block:(i + 1) * block]))
        out.append(h)
    return out


for name, H, size in ALGOS:
    for salt in [b"", b"tenant-a"]:
        hs = chain(H, size, salt, list(range(10)), 4)  # tokens 0..9, block 4: two full blocks
        print(name, repr(salt), "salt", hs[0].hex(), "h0", hs[1].hex(), "h1", hs[2].hex())
    # byte order: a token 0x01020304 must be hashed as 04 03 02 01
    print(name, "big tokens", H(H(b"")[:size] + le([0x01020304, 0xFFFFFFFE])).hex())
    # a long block (300 tokens) takes xxh3's streaming path
    long_tokens = [(i * 2654435761) & 0xFFFFFFFF for i in range(600)]
    print(name, "long h1", chain(H, size, b"long", long_tokens, 300)[2].hex())
