//! WAL positions, segments and the WAL archive of a repository, as the receive-wal tests read
//! them.

use std::io::Read;
use std::path::Path;

use backup_core::receive::{receiving_name, PartialReader};
use backup_core::store::RepoLocation;
use backup_core::wal::{SegmentName, WalSegmentSize};
use backup_core::{layout, Repository, Secret};
use integration::Cluster;
use pgwire_repl::{Lsn, TimelineId};

/// The repository at `repo`, opened with `passphrase`.
pub fn open_repo(repo: &Path, passphrase: &str) -> Repository {
    Repository::open(
        &RepoLocation::local(repo),
        Some(&Secret::new(passphrase.as_bytes().to_vec())),
    )
    .unwrap()
}

/// A test file's passphrase, with the pgstream runs, repository opens and receivers that use it.
pub struct Keyed(pub &'static str);

impl Keyed {
    /// pgstream with `args`, the passphrase given through the environment.
    pub fn pgstream(&self, args: &[&str]) -> super::Run {
        super::pgstream(args, Some(self.0))
    }

    pub fn init_repo(&self, repo: &Path) {
        super::init_repo(repo, self.0);
    }

    pub fn open_repo(&self, repo: &Path) -> Repository {
        open_repo(repo, self.0)
    }

    /// `receive-wal` into `repo` from `conninfo`, as [`super::receiver::Receiver::start`].
    pub fn start_receiver(
        &self,
        repo: &Path,
        conninfo: &str,
        extra: &[&str],
        log: std::path::PathBuf,
    ) -> super::receiver::Receiver {
        super::receiver::Receiver::start(repo, conninfo, self.0, extra, log)
    }

    /// `receive-wal --slot SLOT --create-slot` into `repo` from `conninfo`, once it streams.
    pub fn start_streaming_new_slot(
        &self,
        repo: &Path,
        conninfo: &str,
        slot: &str,
        log: std::path::PathBuf,
    ) -> super::receiver::Receiver {
        let r = self.start_receiver(repo, conninfo, &["--slot", slot, "--create-slot"], log);
        r.wait_streaming();
        r
    }
}

pub fn lsn(text: &str) -> Lsn {
    text.trim().parse().unwrap()
}

/// The server's WAL segment size (reported in bytes from 11 on).
pub fn seg_size(pg: &Cluster) -> WalSegmentSize {
    let bytes: u64 = pg
        .psql("SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'")
        .parse()
        .unwrap();
    WalSegmentSize::new(bytes).unwrap()
}

/// The segment of `tli` being written on `pg` now.
pub fn current_segment(pg: &Cluster, tli: u32, size: WalSegmentSize) -> SegmentName {
    SegmentName::from_lsn(
        TimelineId(tli),
        lsn(&pg.psql("SELECT pg_current_wal_lsn()")),
        size,
    )
}

/// The bytes of the complete segment `seg` in the archive, if it is there.
pub fn archived(repo: &Repository, seg: &SegmentName) -> Option<Vec<u8>> {
    let name = layout::wal_segment_file(seg, repo.codec());
    if !repo.has_file(&name).unwrap() {
        return None;
    }
    let mut out = Vec::new();
    repo.open_file(&name)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    Some(out)
}

/// The valid bytes of receive-wal's partial for `seg`, if any.
pub fn partial(repo: &Repository, seg: &SegmentName) -> Option<Vec<u8>> {
    let name = receiving_name(seg, true);
    if !repo.has_file(&name).unwrap() {
        return None;
    }
    let mut out = Vec::new();
    PartialReader::open(repo.store().as_ref(), &name, repo.codec())
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    Some(out)
}

/// What the server was told is durably received through `slot`.
pub fn slot_flush(pg: &Cluster, slot: &str) -> Lsn {
    let v = pg.psql(&format!(
        "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ));
    if v.is_empty() {
        Lsn(0)
    } else {
        lsn(&v)
    }
}

/// `rows` rows into table `t`, then `switches` times 500 more and a WAL switch.
pub fn write_wal(pg: &Cluster, rows: u32, switches: usize) {
    pg.psql(&format!(
        "CREATE TABLE IF NOT EXISTS t (id serial, note text);
         INSERT INTO t (note) SELECT 'row ' || g FROM generate_series(1, {rows}) g;"
    ));
    for _ in 0..switches {
        pg.psql(
            "INSERT INTO t (note) SELECT 'more' FROM generate_series(1, 500);
             SELECT pg_switch_wal();",
        );
    }
}

/// Restores the repository's newest base backup into `target`, puts every complete segment
/// the archive holds and receive-wal's partial of the next one (zero-padded) into its pg_wal,
/// and starts it: crash recovery then replays every byte of WAL the repository received.
pub fn restore_with_received_wal(
    key: &Keyed,
    major: u32,
    repo_dir: &Path,
    target: &Path,
    ctx: &str,
) -> Cluster {
    let run = key.pgstream(&[
        "restore",
        "--repo",
        repo_dir.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{ctx}: restore: {run:?}");
    let repo = key.open_repo(repo_dir);
    let size = WalSegmentSize::new(u64::from(repo.cluster().unwrap().wal_segment_size)).unwrap();
    let state =
        backup_core::receive::start::ArchiveState::scan(repo.store().as_ref(), repo.config())
            .unwrap();
    let mut segs = state.complete.clone();
    segs.sort_by_key(|s| (s.timeline.0, s.segno));
    let pg_wal = target.join("pg_wal");
    for seg in &segs {
        std::fs::write(pg_wal.join(seg.to_string()), archived(&repo, seg).unwrap()).unwrap();
    }
    let next = segs.last().expect("segments archived").next();
    if let Some(mut tail) = partial(&repo, &next) {
        tail.resize(size.bytes() as usize, 0);
        std::fs::write(pg_wal.join(next.to_string()), tail).unwrap();
    }
    if let integration::ServerUser::Switch { name, .. } = integration::server_user() {
        let status = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{name}:"))
            .arg(target)
            .status()
            .unwrap();
        assert!(status.success());
    }
    integration::cluster(major)
        .restored_data_dir(target)
        .start()
}
