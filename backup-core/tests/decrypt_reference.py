#!/usr/bin/env python3
"""Decrypt one pgstream repository file following docs/format.md, without pgstream.

Usage: PGSTREAM_PASSPHRASE=... decrypt_reference.py REPO_DIR NAME OUTPUT

NAME is the file's repository-relative name (its identity), e.g. backups/<id>/base.tar.lz4.
OUTPUT receives the plaintext stream: still compressed (an lz4 frame, zstd frame or gzip
stream, per the header), so `lz4 -d`, `zstd -d` or `gzip -d` finishes the job.
Needs: pip install cryptography
"""
import hashlib
import json
import os
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt


def read_config(repo):
    raw = open(os.path.join(repo, "pgstream.repo"), "rb").read()
    if raw[:8] != b"PGSTREAM":
        sys.exit("bad config magic")
    version, length = struct.unpack(">II", raw[8:16])
    if version != 1:
        sys.exit(f"unsupported repository format version {version}")
    # raw[16+length:] is the CRC-32C of raw[:16+length]; not needed to decrypt.
    return version, json.loads(raw[16 : 16 + length])


def data_key(config, version, passphrase):
    enc = config["encryption"]
    kdf = enc["kdf"]
    kek = Scrypt(
        salt=bytes.fromhex(kdf["salt"]), length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"]
    ).derive(passphrase)
    wrap = enc["key_wrap"]
    aad = (
        b"pgstream-data-key"
        + bytes.fromhex(config["repository_id"])
        + struct.pack(">I", version)
    )
    try:
        return AESGCM(kek).decrypt(
            bytes.fromhex(wrap["nonce"]), bytes.fromhex(wrap["ciphertext"]), aad
        )
    except InvalidTag:
        sys.exit("wrong passphrase")


def decrypt_file(path, identity, key, out):
    f = open(path, "rb")
    fixed = f.read(50)
    if fixed[:8] != b"PGSTFILE":
        sys.exit("not a pgstream encrypted file")
    version, aead_id, _compression_id, chunk_size = struct.unpack(">HBBI", fixed[8:16])
    assert version == 1, version
    salt = fixed[16:48]
    (id_len,) = struct.unpack(">H", fixed[48:50])
    stored_identity = f.read(id_len)
    if stored_identity != identity.encode():
        sys.exit(f"file holds {stored_identity!r}, expected {identity!r}")
    header = fixed + stored_identity
    header_hash = hashlib.sha256(header).digest()
    info = b"pgstream-file-key" + hashlib.sha256(identity.encode()).digest()
    file_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)
    cipher = {1: AESGCM, 2: ChaCha20Poly1305}[aead_id](file_key)

    record_len = chunk_size + 16
    index = 0
    record = f.read(record_len)
    while True:
        following = f.read(record_len) if len(record) == record_len else b""
        final = len(following) == 0
        nonce = b"\0\0\0\0" + struct.pack(">Q", index)
        aad = header_hash + struct.pack(">QB", index, 1 if final else 0)
        out.write(cipher.decrypt(nonce, record, aad))  # raises InvalidTag on any damage
        if final:
            return
        record, index = following, index + 1


def main():
    repo, name, output = sys.argv[1:4]
    version, config = read_config(repo)
    key = data_key(config, version, os.environb[b"PGSTREAM_PASSPHRASE"])
    with open(output, "wb") as out:
        decrypt_file(os.path.join(repo, name), name, key, out)


if __name__ == "__main__":
    main()
