//! A throwaway S3-compatible server for `s3://` repositories: `s3s-fs` on a free loopback port,
//! random keys, a temporary directory as its storage, one bucket; killed and deleted on drop.
//!
//! ```no_run
//! let s3 = integration::S3Server::start();
//! let repo = s3.location("repo"); // "s3://pgstream-test/repo"
//! let mut cmd = std::process::Command::new("pgstream");
//! cmd.envs(s3.env()).args(["init", "--repo", &repo]);
//! for key in s3.keys("repo/") { let _bytes = s3.read(&key); }
//! ```
//!
//! The binary: `PGSTREAM_S3S_BIN`, else `${PGSTREAM_S3S_ROOT:-/var/cache/pgstream/s3s-fs}/bin/s3s-fs`
//! (what `scripts/install-s3-server.sh` installs); missing, the test fails naming the script.
//! s3s-fs keeps object `key` of bucket `b` as the file `ROOT/b/key` (and its own bookkeeping,
//! object metadata and the parts of uploads in progress, as `ROOT/.*` files), so tests read,
//! overwrite and delete objects behind the server's back through [`S3Server::object_path`], and
//! see everything it stores through [`S3Server::all_files`].

use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;

/// The bucket every [`S3Server`] has.
pub const TEST_BUCKET: &str = "pgstream-test";

/// A running s3s-fs.
pub struct S3Server {
    child: Child,
    port: u16,
    access_key: String,
    secret_key: String,
    dir: tempfile::TempDir,
}

/// Where the s3s-fs binary is expected.
pub fn s3s_fs_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PGSTREAM_S3S_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let root = std::env::var_os("PGSTREAM_S3S_ROOT")
        .filter(|r| !r.is_empty())
        .map_or_else(
            || PathBuf::from("/var/cache/pgstream/s3s-fs"),
            PathBuf::from,
        );
    root.join("bin/s3s-fs")
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    openssl::rand::rand_bytes(&mut buf).expect("the OpenSSL random generator failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl S3Server {
    /// Starts a server with the bucket [`TEST_BUCKET`] and waits until it accepts connections.
    /// Panics (naming `scripts/install-s3-server.sh`) when the binary is missing.
    pub fn start() -> S3Server {
        let bin = s3s_fs_bin();
        assert!(
            bin.is_file(),
            "the S3 test server s3s-fs is not installed at {}: run `scripts/install-s3-server.sh` \
             (or `just install-s3-server`), or point PGSTREAM_S3S_BIN at an s3s-fs 0.14 binary",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("pgstream-s3-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for the S3 server: {e}"));
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join(TEST_BUCKET))
            .unwrap_or_else(|e| panic!("cannot create the bucket directory: {e}"));
        let access_key = format!("AK{}", random_hex(8).to_uppercase());
        let secret_key = random_hex(20);
        // A port may be taken by another process between picking and binding: try a few.
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("s3s-fs.log"))
                .unwrap_or_else(|e| panic!("cannot create the S3 server's log: {e}"));
            let mut child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &access_key, "--secret-key", &secret_key])
                .arg(&root)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                    return S3Server {
                        child,
                        port,
                        access_key,
                        secret_key,
                        dir,
                    };
                }
                if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let log = std::fs::read_to_string(dir.path().join("s3s-fs.log")).unwrap_or_default();
        panic!("s3s-fs did not start listening on 127.0.0.1 (5 tries); its log:\n{log}")
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The repository location `s3://pgstream-test/<prefix>`.
    pub fn location(&self, prefix: &str) -> String {
        format!("s3://{TEST_BUCKET}/{prefix}")
    }

    /// The access key id (not secret).
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key (tests check it appears nowhere).
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// What a pgstream process needs to reach the server: credentials, region and endpoint.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
        ]
    }

    /// Writes a shared credentials file (mode 0600) holding the keys under `[profile]`, and
    /// returns its path (inside the server's temp dir).
    pub fn credentials_file(&self, profile: &str) -> PathBuf {
        let path = self.dir.path().join(format!("credentials-{profile}"));
        let text = format!(
            "[{profile}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            self.access_key, self.secret_key
        );
        write_private(&path, text.as_bytes());
        path
    }

    /// The directory s3s-fs stores everything under (bucket directories inside).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The file holding object `key` of the test bucket.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root().join(TEST_BUCKET).join(key)
    }

    /// The keys of the test bucket that start with `prefix`, sorted (s3s-fs keeps its own
    /// bookkeeping, metadata and uploads in progress, beside the bucket directories).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let bucket = self.root().join(TEST_BUCKET);
        let mut out = Vec::new();
        walk(&bucket, &bucket, &mut out);
        out.retain(|k| k.starts_with(prefix));
        out.sort();
        out
    }

    /// Every file the server stores (objects, parts of uploads, its bookkeeping), as paths.
    pub fn all_files(&self) -> Vec<PathBuf> {
        let root = self.root();
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.into_iter().map(|k| root.join(k)).collect()
    }

    /// The bytes of object `key`.
    pub fn read(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.object_path(key))
            .unwrap_or_else(|e| panic!("cannot read object {key}: {e}"))
    }

    /// Replaces the bytes of object `key` behind the server's back.
    pub fn overwrite(&self, key: &str, bytes: &[u8]) {
        std::fs::write(self.object_path(key), bytes)
            .unwrap_or_else(|e| panic!("cannot overwrite object {key}: {e}"));
    }

    /// Deletes object `key` behind the server's back.
    pub fn delete(&self, key: &str) {
        std::fs::remove_file(self.object_path(key))
            .unwrap_or_else(|e| panic!("cannot delete object {key}: {e}"));
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("s3s-fs.log")).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            walk(base, &path, out);
        } else {
            let rel = path.strip_prefix(base).expect("under base");
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    f.write_all(bytes)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
