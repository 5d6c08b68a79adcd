//! Leases: who may write what, in a form every backend can hold (docs/format.md, "Leases").
//!
//! A lease is an object `locks/<name>` holding its holder as JSON (host, pid, since, what for,
//! and on object stores an expiry). Taking it is a create-only write; a holder that died loses
//! it: on a local filesystem the holder keeps an exclusive `flock` on the file for as long as it
//! lives (the kernel drops it when the process dies, so no clock is trusted); on an object store
//! the holder renews the expiry and a taker may replace an expired lease with a conditional
//! write. Releasing deletes the object.
//!
//! The leases pgstream takes: `receive-wal` (one WAL receiver per repository), `expire` (expire
//! and keep), `config` (rewrites of `pgstream.repo`), and `backup.<id>` (a base backup owns its
//! id while it writes `backups/<id>/`).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::StoreError;

/// The directory (key prefix) of leases.
pub const LOCKS_DIR: &str = "locks";
/// Largest lease object read back.
pub const MAX_LEASE_BYTES: u64 = 64 * 1024;

/// The stored name of lease `name`.
pub fn lease_object(name: &str) -> String {
    format!("{LOCKS_DIR}/{name}")
}

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    /// The host name of the holder.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it took the lease, seconds since the Unix epoch.
    pub since_unix: u64,
    /// What it is doing (`pgstream base`, `pgstream receive-wal`, ...).
    pub purpose: String,
    /// Object stores: the lease is void after this time unless renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix: Option<u64>,
}

impl LeaseHolder {
    /// This process, doing `purpose`.
    pub fn this_process(purpose: impl Into<String>) -> LeaseHolder {
        LeaseHolder {
            host: host_name(),
            pid: std::process::id(),
            since_unix: unix_now(),
            purpose: purpose.into(),
            expires_unix: None,
        }
    }

    /// The holder as stored.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a lease holder always serializes");
        v.push(b'\n');
        v
    }

    /// The holder stored in `bytes`; `None` when unreadable (a torn write of a holder that
    /// crashed while taking it).
    pub fn decode(bytes: &[u8]) -> Option<LeaseHolder> {
        serde_json::from_slice(bytes).ok()
    }
}

impl fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = UNIX_EPOCH + std::time::Duration::from_secs(self.since_unix);
        write!(
            f,
            "{} (pid {} on host {}, since {})",
            self.purpose,
            self.pid,
            self.host,
            humantime::format_rfc3339_seconds(since)
        )
    }
}

/// A lease as found: its holder (if readable) and whether the holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease's name.
    pub name: String,
    /// Who holds (or held) it; `None` when the object is unreadable.
    pub holder: Option<LeaseHolder>,
    /// Whether the holder still holds it (alive, or not yet expired).
    pub live: bool,
}

impl fmt::Display for LeaseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.holder {
            Some(h) => write!(f, "{h}"),
            None => write!(f, "another process (its lease {} is unreadable)", self.name),
        }
    }
}

/// A lease held by this process; dropping it releases the lease.
pub trait LeaseGuard: Send + Sync + fmt::Debug {
    /// The lease's name.
    fn name(&self) -> &str;
    /// Whether the lease is still ours. On a local filesystem it cannot be lost while the
    /// process lives; on an object store a failed renewal loses it, and the holder must stop
    /// writing what it guards.
    fn check(&self) -> Result<(), StoreError>;
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// This machine's host name (for naming lease holders; `unknown` if it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// A lease name must be one plain component.
pub fn check_lease_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName {
            name: name.to_string(),
            reason: "a lease name is one component of letters, digits, `-`, `_` and `.`",
        })
    }
}

/// How a lease is described in the error of a refused taker.
pub fn describe_lease(name: &str) -> String {
    match name {
        "receive-wal" => {
            "the repository's WAL receiver lease (one receive-wal per repository)".into()
        }
        "expire" => "the repository's expire lease".into(),
        "config" => "the repository configuration lease".into(),
        n => match n.strip_prefix("backup.") {
            Some(id) => format!("backup id {id}"),
            None => format!("lease {n}"),
        },
    }
}

/// Takes lease `name`, waiting while a live holder has it: at most `wait`, or for as long as
/// it takes with `None`. Says once, at info level, whom it waits for.
pub fn acquire_waiting(
    store: &dyn super::Store,
    name: &str,
    holder: &LeaseHolder,
    wait: impl Into<Option<std::time::Duration>>,
) -> Result<Box<dyn LeaseGuard>, StoreError> {
    let deadline = wait.into().map(|w| std::time::Instant::now() + w);
    let mut told = false;
    let mut pause = std::time::Duration::from_millis(20);
    loop {
        match store.acquire_lease(name, holder) {
            Err(StoreError::LeaseHeld { what, holder: h })
                if deadline.is_none_or(|d| std::time::Instant::now() < d) =>
            {
                if !told {
                    tracing::info!("waiting for {what}, held by {h}");
                    told = true;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(500));
            }
            other => return other,
        }
    }
}
