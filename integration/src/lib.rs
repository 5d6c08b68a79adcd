//! Test harness: throwaway PostgreSQL clusters of any major from 13 to 18.
//!
//! ```no_run
//! for major in integration::test_majors() {
//!     let pg = integration::cluster(major)
//!         .tls(integration::TlsOptions::default())
//!         .setting("wal_keep_size", "64MB")
//!         .start();
//!     assert_eq!(pg.psql("SELECT 1"), "1");
//!     let _conninfo = pg.conninfo("postgres");
//! } // dropped: stopped (immediate) and deleted, even when the test panicked
//! ```
//!
//! Binaries come from `scripts/install-postgres.sh` (see [`pg_bin_dir`] for the resolution
//! order). When the tests run as root, the servers run as an unprivileged user (see
//! [`server_user`]). Environment: `PGSTREAM_TEST_MAJORS` (which majors tests loop over),
//! `PGSTREAM_PG<N>_BIN` / `PGSTREAM_PG_BIN` / `PGSTREAM_PG_ROOT` (where binaries are),
//! `PGSTREAM_TEST_USER` (server user when root), `PGSTREAM_KEEP_CLUSTERS=1` (keep temp dirs).
//! `s3://` repositories live on an [`S3Server`] (`scripts/install-s3-server.sh`).

mod bins;
mod builder;
mod cluster;
mod conf;
mod machine;
mod ports;
mod s3;
mod s3_faults;
mod server_user;
mod tls;

pub use bins::{
    binary_major, client_tool, client_tool_exact, client_tool_major, find_pg_bin_dir, parse_major,
    pg_bin_dir, pg_root, DEFAULT_PG_ROOT, SUPPORTED_MAJORS,
};
pub use builder::{cluster, quote_ident, quote_literal, scratch_dir, ClusterBuilder};
pub use cluster::{Cluster, SUPERUSER};
pub use conf::DEFAULT_HBA;
pub use machine::{drop_caches, machine, memory};
pub use ports::free_port;
pub use s3::{s3s_fs_bin, S3Server, TEST_BUCKET};
pub use s3_faults::{Fault, FaultProxy};
pub use server_user::{effective_uid, server_user, ServerUser, DEFAULT_TEST_USER};
pub use tls::{TlsOptions, TlsPaths};

/// The majors tests loop over: `PGSTREAM_TEST_MAJORS` (comma-separated, e.g. `16` or
/// `13,14,15,16,17,18`), all of 13..=18 by default. Panics on a malformed or unsupported entry.
pub fn test_majors() -> Vec<u32> {
    match std::env::var("PGSTREAM_TEST_MAJORS") {
        Ok(list) if !list.trim().is_empty() => {
            parse_majors(&list).unwrap_or_else(|e| panic!("PGSTREAM_TEST_MAJORS={list:?}: {e}"))
        }
        _ => SUPPORTED_MAJORS.collect(),
    }
}

fn parse_majors(list: &str) -> Result<Vec<u32>, String> {
    let mut majors = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let major: u32 = item
            .parse()
            .map_err(|_| format!("{item:?} is not a major version number"))?;
        if !SUPPORTED_MAJORS.contains(&major) {
            return Err(format!(
                "major {major} is not supported (supported: {}..={})",
                SUPPORTED_MAJORS.start(),
                SUPPORTED_MAJORS.end()
            ));
        }
        if !majors.contains(&major) {
            majors.push(major);
        }
    }
    Ok(majors)
}

// Tests share clusters across tokio tasks (`Arc<Cluster>`).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Cluster>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_major_lists() {
        assert_eq!(parse_majors("16"), Ok(vec![16]));
        assert_eq!(parse_majors(" 13, 18 ,13"), Ok(vec![13, 18]));
        assert!(parse_majors("12").is_err());
        assert!(parse_majors("x").is_err());
    }
}
