//! docs/format.md is complete enough to decrypt without pgstream: `decrypt_reference.py`, written
//! from the document with Python's `cryptography` package, decrypts files pgstream wrote.

use backup_core::{Aead, Compression, Encryption, InitOptions, KdfCost, Repository, Secret};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

fn loc(p: &std::path::Path) -> backup_core::store::RepoLocation {
    backup_core::store::RepoLocation::local(p)
}

fn require_cryptography() {
    let ok = Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 with the `cryptography` package is required for this test: \
         run `pip install cryptography` (or apt-get install python3-cryptography)"
    );
}

fn run_reference(repo: &Path, name: &str, out: &Path, passphrase: &str) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/decrypt_reference.py");
    Command::new("python3")
        .arg(script)
        .arg(repo)
        .arg(name)
        .arg(out)
        .env("PGSTREAM_PASSPHRASE", passphrase)
        .output()
        .expect("running python3")
}

#[test]
fn python_decrypts_following_format_md() {
    require_cryptography();
    let passphrase = "reference passphrase";
    for aead in [Aead::Aes256Gcm, Aead::ChaCha20Poly1305] {
        for (compression, len) in [
            (Compression::None, 0),
            (Compression::None, 65536 * 3),
            (Compression::None, 65536 * 3 + 5),
            (Compression::Lz4, 400_000),
        ] {
            let d = tempfile::tempdir().unwrap();
            let options = InitOptions {
                compression,
                encryption: Encryption::Aead(aead),
                kdf_cost: KdfCost {
                    log2_n: 12,
                    r: 8,
                    p: 2,
                },
                ..InitOptions::default()
            };
            let repo =
                Repository::init(&loc(d.path()), options, Some(&Secret::from(passphrase))).unwrap();
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let name = "base.tar";
            let mut sink = repo.create_file(name).unwrap();
            sink.write_all(&data).unwrap();
            sink.finish().unwrap();

            let out = d.path().join("out");
            let o = run_reference(d.path(), name, &out, passphrase);
            assert!(
                o.status.success(),
                "{aead} {compression} {len}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let plain = std::fs::read(&out).unwrap();
            let decoded = match compression {
                Compression::Lz4 => {
                    let mut v = Vec::new();
                    lz4_flex::frame::FrameDecoder::new(&plain[..])
                        .read_to_end(&mut v)
                        .unwrap();
                    v
                }
                _ => plain,
            };
            assert!(
                decoded == data,
                "{aead} {compression} {len}: content differs"
            );
        }
    }
}

#[test]
fn python_reference_rejects_a_wrong_passphrase_and_tampering() {
    require_cryptography();
    let d = tempfile::tempdir().unwrap();
    let options = InitOptions {
        kdf_cost: KdfCost {
            log2_n: 10,
            r: 8,
            p: 1,
        },
        ..InitOptions::default()
    };
    let repo = Repository::init(&loc(d.path()), options, Some(&Secret::from("pw"))).unwrap();
    let mut sink = repo.create_file("f").unwrap();
    sink.write_all(&[1u8; 200_000]).unwrap();
    sink.finish().unwrap();
    let out = d.path().join("out");
    let o = run_reference(d.path(), "f", &out, "not it");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong passphrase"));

    let path = d.path().join("f");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let o = run_reference(d.path(), "f", &out, "pw");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("InvalidTag"));
}
