#!/usr/bin/env python3
"""Read a pgstream repository following docs/format.md, without pgstream.

Usage: PGSTREAM_PASSPHRASE=... decrypt_reference.py REPO_DIR NAME [OUTPUT]

The repository's configuration is authenticated first (format 2: its MAC; a configuration that
says "unencrypted" is refused, since a passphrase was given).

- NAME a stored file (e.g. backups/<id>/base.tar.lz4.enc): OUTPUT receives the plaintext
  stream, still compressed (an lz4 frame, zstd frame or gzip stream, per the header), so
  `lz4 -d`, `zstd -d` or `gzip -d` finishes the job.
- NAME a catalog record (backups/<id>/backup.json) or a pin (backups/<id>/pin.json): its
  checksum and MAC are verified and "authentic" is printed; no OUTPUT.
Needs: pip install cryptography
"""
import hashlib
import hmac
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
    if version not in (1, 2):
        sys.exit(f"unsupported repository format version {version}")
    # raw[16+length:] is the CRC-32C of raw[:16+length]: it catches damage, not tampering.
    return version, json.loads(raw[16 : 16 + length])


def json_float(f):
    """A float as serde_json writes it (shortest round trip; exponent without padding or '+')."""
    text = repr(f)
    if "e" in text:
        mantissa, exp = text.split("e")
        text = f"{mantissa}e{int(exp)}"
    return text


def compact(value):
    """Compact JSON as serde_json writes it: fields in their order, no spaces, UTF-8 as is."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{compact(k)}:{compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(compact(v) for v in value) + "]"
    if isinstance(value, float):
        return json_float(value)
    return json.dumps(value, ensure_ascii=False)


def meta_mac(key, label, body):
    mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"\0" * 32, info=label).derive(key)
    return hmac.new(mac_key, body, hashlib.sha256).hexdigest()


def keyring(config, version, passphrase):
    """The unwrapped data keys by id, and the active key id."""
    enc = config["encryption"]
    if enc is None:
        sys.exit("the configuration says the repository is not encrypted, but a passphrase "
                 "was given: refused (it may have been altered)")
    kdf = enc["kdf"]
    kek = Scrypt(
        salt=bytes.fromhex(kdf["salt"]), length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"]
    ).derive(passphrase)
    repo_id = bytes.fromhex(config["repository_id"])
    if version == 1:
        stored = [{"id": 0, "wrap": enc["key_wrap"]}]
        active = 0
    else:
        stored = enc["keys"]
        active = enc["active_key"]
    keys = {}
    for k in stored:
        aad = b"pgstream-data-key" + repo_id + struct.pack(">I", version)
        if version >= 2:
            aad += struct.pack(">I", k["id"])
        wrap = k["wrap"]
        try:
            keys[k["id"]] = AESGCM(kek).decrypt(
                bytes.fromhex(wrap["nonce"]), bytes.fromhex(wrap["ciphertext"]), aad
            )
        except InvalidTag:
            sys.exit("wrong passphrase")
    if version >= 2:
        mac = config.get("mac")
        if mac is None:
            sys.exit("the configuration has no MAC: altered")
        body = {k: v for k, v in config.items() if k != "mac"}
        expected = meta_mac(keys[mac["key_id"]], b"pgstream-config", compact(body).encode())
        if not hmac.compare_digest(expected, mac["hmac"]):
            sys.exit("the configuration's MAC does not verify: altered")
    return keys, active


def decrypt_file(path, identity, keys, out):
    f = open(path, "rb")
    fixed = f.read(50)
    if fixed[:8] != b"PGSTFILE":
        sys.exit("not a pgstream encrypted file")
    version, aead_id, _compression_id, chunk_size = struct.unpack(">HBBI", fixed[8:16])
    assert version in (1, 2), version
    key_id = 0
    if version == 2:
        fixed += f.read(4)
        (key_id,) = struct.unpack(">I", fixed[16:20])
    at = len(fixed) - 50
    salt = fixed[at + 16 : at + 48]
    (id_len,) = struct.unpack(">H", fixed[at + 48 : at + 50])
    stored_identity = f.read(id_len)
    if stored_identity != identity.encode():
        sys.exit(f"file holds {stored_identity!r}, expected {identity!r}")
    if key_id not in keys:
        sys.exit(f"written with data key {key_id}, which the keyring does not hold")
    header = fixed + stored_identity
    header_hash = hashlib.sha256(header).digest()
    info = b"pgstream-file-key" + hashlib.sha256(identity.encode()).digest()
    file_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(
        keys[key_id]
    )
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


def verify_sealed(path, keys, label):
    """A catalog record or pin: checksum and MAC over its compact form without them."""
    doc = json.loads(open(path, "rb").read())
    body = compact({k: v for k, v in doc.items() if k not in ("checksum", "mac")}).encode()
    if hashlib.sha256(body).hexdigest() != doc.get("checksum"):
        sys.exit("checksum mismatch: damaged")
    key_id = doc.get("key_id", 0)
    if key_id not in keys or doc.get("mac") is None:
        sys.exit("no MAC, or a key the keyring does not hold: altered")
    if not hmac.compare_digest(meta_mac(keys[key_id], label, body), doc["mac"]):
        sys.exit("MAC mismatch: altered")
    print("authentic")


def main():
    repo, name = sys.argv[1:3]
    version, config = read_config(repo)
    keys, _active = keyring(config, version, os.environb[b"PGSTREAM_PASSPHRASE"])
    path = os.path.join(repo, name)
    if name.endswith("/backup.json"):
        verify_sealed(path, keys, b"pgstream-catalog-record")
    elif name.endswith("/pin.json"):
        verify_sealed(path, keys, b"pgstream-pin-record")
    else:
        with open(sys.argv[3], "wb") as out:
            decrypt_file(path, name, keys, out)


if __name__ == "__main__":
    main()
