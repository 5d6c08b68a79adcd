//! The repository's WAL archive (`wal/`, docs/format.md section 8): complete segments,
//! `.partial` segments, timeline history files and backup history files, each stored once.
//!
//! Storing is idempotent, as archive_command must be: a name that is already stored succeeds
//! again when the content is the same and is a [`WalArchiveError::Conflict`] otherwise; nothing
//! is ever overwritten (a concurrent writer loses at [`FileSink::finish`], which refuses to
//! replace, and then compares). Fetching is what restore_command needs: the decrypted,
//! decompressed file, written durably; a segment that only exists as the newest `.partial` of its
//! timeline (in `wal/` or kept with a base backup) is served under its plain name, padded with
//! zeros, so recovery reaches the last byte received.
//!
//! Everything streams through fixed buffers: a segment is never held in memory.

use std::io::{self, Read, Write};
use std::path::Path;

use pgwire_repl::TimelineId;

use crate::catalog::{Catalog, CatalogError};
use crate::file_error::FileError;
use crate::fsutil::{self, DurableFile, FsError, Replace};
use crate::layout::{self, WAL_DIR};
use crate::repo::config::ClusterIdentity;
use crate::repo::{RepoError, Repository};
use crate::sink::SinkError;
use crate::wal::{
    is_wal_file_name, major_for_magic, SegmentCheck, SegmentName, SegmentValidator,
    TimelineHistory, WalFileName, WalPageError, WalSegmentSize,
};

const BUFFER: usize = 64 * 1024;
/// History and backup history files are a few lines; anything this large is not one.
const MAX_TEXT_FILE: u64 = 1024 * 1024;

/// What [`WalArchive::store`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// The file is now in the archive.
    Stored,
    /// The archive already held the same content under that name.
    AlreadyPresent,
}

/// What [`WalArchive::fetch`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The archived file, as stored (`stored` is its repository name).
    Archived { stored: String },
    /// A segment served from a partial copy (`stored`), holding `bytes` bytes of WAL and padded
    /// with zeros to the segment size.
    FromPartial { stored: String, bytes: u64 },
}

/// One segment in the archive, as listed by [`WalArchive::list_segments`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedSegment {
    pub name: SegmentName,
    /// A `.partial` segment (incomplete) rather than a complete one.
    pub partial: bool,
    /// Its repository name.
    pub stored: String,
}

/// A file an archive holds, by the name PostgreSQL gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveFileName {
    Wal(WalFileName),
    /// `<segment>.<offset 8 hex>.backup`: the backup history file a primary writes (and
    /// archives) at the end of every base backup.
    BackupHistory {
        segment: SegmentName,
        name: String,
    },
}

impl ArchiveFileName {
    /// Parses any name archive_command may be given. `seg_size` is needed for segment names.
    pub fn parse(name: &str, seg_size: WalSegmentSize) -> Result<ArchiveFileName, WalArchiveError> {
        let invalid = |reason: String| WalArchiveError::InvalidName {
            name: name.to_string(),
            reason,
        };
        if let Some(stem) = name.strip_suffix(".backup") {
            let ok = stem.len() == 33
                && stem.as_bytes()[24] == b'.'
                && is_wal_file_name(&stem[..24])
                && stem[25..]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
            if !ok {
                return Err(invalid(
                    "a backup history file is named <24 hex digits>.<8 hex digits>.backup".into(),
                ));
            }
            let segment =
                SegmentName::parse(&stem[..24], seg_size).map_err(|e| invalid(e.to_string()))?;
            return Ok(ArchiveFileName::BackupHistory {
                segment,
                name: name.to_string(),
            });
        }
        WalFileName::parse(name, seg_size)
            .map(ArchiveFileName::Wal)
            .map_err(|e| invalid(e.to_string()))
    }
}

impl std::fmt::Display for ArchiveFileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveFileName::Wal(w) => write!(f, "{w}"),
            ArchiveFileName::BackupHistory { name, .. } => f.write_str(name),
        }
    }
}

/// Why storing or fetching failed.
#[derive(Debug, thiserror::Error)]
pub enum WalArchiveError {
    /// Not in the archive (restore_command's normal "no such file").
    #[error("{name} is not in the WAL archive")]
    NotFound { name: String },
    /// A name that is not a WAL, history or backup history file name.
    #[error("{name:?} is not a file pgstream archives: {reason}")]
    InvalidName { name: String, reason: String },
    /// The name is stored with other content. Nothing was changed.
    #[error(
        "the WAL archive already holds {name} ({stored}) with different content; nothing was \
         overwritten. Is a second cluster, or a restored copy on the same timeline, archiving \
         into this repository? Give each cluster its own repository"
    )]
    Conflict { name: String, stored: String },
    /// A segment that is not exactly the segment size (or a partial that is larger).
    #[error("{name} has {actual} bytes, but a WAL segment of this cluster has {expected}")]
    WrongSize {
        name: String,
        expected: u64,
        actual: u64,
    },
    /// A segment written by another cluster than the one the repository is bound to.
    #[error("{name} does not belong to the cluster of this repository ({bound}): {source}")]
    OtherCluster {
        name: String,
        bound: ClusterIdentity,
        #[source]
        source: WalPageError,
    },
    /// A segment whose page headers are not valid WAL.
    #[error("{name} is not a valid WAL segment: {source}")]
    InvalidSegment {
        name: String,
        #[source]
        source: WalPageError,
    },
    /// A segment whose first page has no header at all (zeros, or not WAL).
    #[error("{name} is not WAL: its first page has no WAL page header")]
    NotWal { name: String },
    /// A timeline history file that does not parse.
    #[error("{name} is not a valid timeline history file: {detail}")]
    InvalidHistory { name: String, detail: String },
    /// A segment is missing although later ones of its timeline are archived: serving a
    /// partial copy would end recovery early, so nothing is served.
    #[error(
        "segment {name} is missing from the WAL archive although later segments of its \
         timeline are there (up to {newest}); the archive has a gap"
    )]
    Gap { name: String, newest: String },
    /// Reading the file to store failed.
    #[error("reading {name}: {source}")]
    Source {
        name: String,
        #[source]
        source: io::Error,
    },
    /// Reading a stored file failed (I/O, authentication, decompression: see
    /// [`FileError::from_io`]).
    #[error("reading {stored} from the WAL archive: {source}")]
    Stored {
        stored: String,
        #[source]
        source: io::Error,
    },
    /// A stored file holds more or fewer bytes than it must.
    #[error(
        "{stored} in the WAL archive holds {actual} bytes, expected {expected}; it is damaged"
    )]
    StoredSize {
        stored: String,
        expected: u64,
        actual: u64,
    },
    /// Writing into the repository failed.
    #[error("storing {stored}: {source}")]
    Sink {
        stored: String,
        #[source]
        source: SinkError,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl WalArchiveError {
    /// The [`FileError`] of a stored file that failed to read, if that is what happened.
    pub fn file_error(&self) -> Option<&FileError> {
        match self {
            WalArchiveError::Stored { source, .. } => FileError::from_io(source),
            WalArchiveError::Repo(RepoError::File(f)) => Some(f),
            _ => None,
        }
    }
}

/// The cluster a segment's first page names (its long header), if it has one: what an unbound
/// repository is bound to when the first segment arrives.
pub fn segment_cluster(first_page: &[u8]) -> Option<ClusterIdentity> {
    if first_page.len() < 40 {
        return None;
    }
    let u16_at = |i: usize| u16::from_le_bytes([first_page[i], first_page[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(first_page[i..i + 4].try_into().expect("4"));
    let u64_at = |i: usize| u64::from_le_bytes(first_page[i..i + 8].try_into().expect("8"));
    let major = major_for_magic(u16_at(0))?;
    if u16_at(2) & 0x0002 == 0 {
        return None;
    }
    let wal_segment_size = u32_at(32);
    WalSegmentSize::new(u64::from(wal_segment_size)).ok()?;
    Some(ClusterIdentity {
        system_identifier: u64_at(24),
        major,
        wal_segment_size,
    })
}

/// The WAL archive of one repository.
#[derive(Debug)]
pub struct WalArchive<'a> {
    repo: &'a Repository,
}

impl<'a> WalArchive<'a> {
    pub fn new(repo: &'a Repository) -> WalArchive<'a> {
        WalArchive { repo }
    }

    /// The segment size of the cluster the repository is bound to (`None` while unbound: then
    /// the archive holds no segments).
    pub fn segment_size(&self) -> Option<WalSegmentSize> {
        self.repo
            .cluster()
            .and_then(|c| WalSegmentSize::new(u64::from(c.wal_segment_size)).ok())
    }

    /// The repository name `file` is stored under.
    pub fn stored_name(&self, file: &ArchiveFileName) -> String {
        let codec = self.repo.codec();
        match file {
            ArchiveFileName::Wal(WalFileName::Segment(s)) => layout::wal_segment_file(s, codec),
            ArchiveFileName::Wal(WalFileName::Partial(s)) => format!(
                "{}/{}{}",
                layout::wal_segment_dir(s),
                s.partial_name(),
                layout::suffix(codec)
            ),
            ArchiveFileName::Wal(WalFileName::History(t)) => layout::history_file(t.0, codec),
            ArchiveFileName::BackupHistory { segment, name } => format!(
                "{}/{name}{}",
                layout::wal_segment_dir(segment),
                layout::suffix(codec)
            ),
        }
    }

    /// Stores a complete segment (exactly the segment size, page headers checked against the
    /// repository's cluster when it is bound), a `.partial` segment (at most the segment size)
    /// or a timeline history file, read from `src`.
    pub fn store(
        &self,
        file: &WalFileName,
        src: &mut dyn Read,
    ) -> Result<StoreOutcome, WalArchiveError> {
        self.store_file(&ArchiveFileName::Wal(*file), src)
    }

    /// [`WalArchive::store`] for any archivable name, backup history files included.
    pub fn store_file(
        &self,
        file: &ArchiveFileName,
        src: &mut dyn Read,
    ) -> Result<StoreOutcome, WalArchiveError> {
        let name = file.to_string();
        let stored = self.stored_name(file);
        let path = self.repo.resolve(&stored)?;
        if path.exists() {
            return self.compare_existing(&name, &stored, src);
        }
        if let Some(parent) = path.parent() {
            fsutil::create_dir_all_durably(parent)?;
        }
        let mut check = self.checker(file)?;
        let mut sink = self.repo.create_file(&stored)?;
        let (mut crc, mut len) = (0u32, 0u64);
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = read_some(src, &mut buf).map_err(|source| WalArchiveError::Source {
                name: name.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            check.push(&buf[..n])?;
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            len += n as u64;
            sink.write_all(&buf[..n])
                .map_err(|source| WalArchiveError::Sink {
                    stored: stored.clone(),
                    source: SinkError::Write {
                        path: path.clone(),
                        source,
                    },
                })?;
        }
        // An invalid file is refused here: dropping the sink removes its temporary file.
        check.finish()?;
        match sink.finish() {
            Ok(_) => {
                tracing::debug!(file = %name, stored = %stored, "stored in the WAL archive");
                Ok(StoreOutcome::Stored)
            }
            Err(SinkError::Fs(e)) if e.source.kind() == io::ErrorKind::AlreadyExists => {
                // Someone stored the name meanwhile: same content or a conflict.
                let (theirs_crc, theirs_len) = self.stored_crc(&stored)?;
                if (theirs_crc, theirs_len) == (crc, len) {
                    Ok(StoreOutcome::AlreadyPresent)
                } else {
                    Err(WalArchiveError::Conflict { name, stored })
                }
            }
            Err(source) => Err(WalArchiveError::Sink { stored, source }),
        }
    }

    fn checker(&self, file: &ArchiveFileName) -> Result<Checker, WalArchiveError> {
        let name = file.to_string();
        Ok(match file {
            ArchiveFileName::Wal(WalFileName::Segment(s) | WalFileName::Partial(s)) => {
                let bound = self.repo.cluster();
                if let Some(b) = bound {
                    if u64::from(b.wal_segment_size) != s.seg_size.bytes() {
                        return Err(WalArchiveError::InvalidName {
                            name,
                            reason: format!(
                                "it was parsed for {} segments, but the repository's cluster \
                                 uses {}",
                                s.seg_size, b.wal_segment_size
                            ),
                        });
                    }
                }
                let mut check = SegmentCheck::new(*s);
                check.system_identifier = bound.map(|b| b.system_identifier);
                check.major = bound.map(|b| b.major);
                let validator = SegmentValidator::new(check).map_err(|source| {
                    WalArchiveError::InvalidSegment {
                        name: name.clone(),
                        source,
                    }
                })?;
                Checker::Segment {
                    name,
                    partial: matches!(file, ArchiveFileName::Wal(WalFileName::Partial(_))),
                    seg_bytes: s.seg_size.bytes(),
                    len: 0,
                    validator,
                    bound,
                }
            }
            ArchiveFileName::Wal(WalFileName::History(t)) => Checker::Text {
                name,
                history: Some(*t),
                content: Vec::new(),
            },
            ArchiveFileName::BackupHistory { .. } => Checker::Text {
                name,
                history: None,
                content: Vec::new(),
            },
        })
    }

    /// Streams `src` against the stored copy, byte for byte.
    fn compare_existing(
        &self,
        name: &str,
        stored: &str,
        src: &mut dyn Read,
    ) -> Result<StoreOutcome, WalArchiveError> {
        let mut ours = self.repo.open_file(stored)?;
        let (mut a, mut b) = (vec![0u8; BUFFER], vec![0u8; BUFFER]);
        loop {
            let n = read_some(src, &mut a).map_err(|source| WalArchiveError::Source {
                name: name.to_string(),
                source,
            })?;
            let m = read_full(&mut ours, &mut b[..n.max(1)]).map_err(|source| {
                WalArchiveError::Stored {
                    stored: stored.to_string(),
                    source,
                }
            })?;
            if n == 0 {
                return if m == 0 {
                    Ok(StoreOutcome::AlreadyPresent)
                } else {
                    Err(WalArchiveError::Conflict {
                        name: name.to_string(),
                        stored: stored.to_string(),
                    })
                };
            }
            if m != n || a[..n] != b[..n] {
                return Err(WalArchiveError::Conflict {
                    name: name.to_string(),
                    stored: stored.to_string(),
                });
            }
        }
    }

    /// CRC-32C and length of a stored file's content.
    fn stored_crc(&self, stored: &str) -> Result<(u32, u64), WalArchiveError> {
        let mut reader = self.repo.open_file(stored)?;
        let (mut crc, mut len) = (0u32, 0u64);
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = read_some(&mut reader, &mut buf).map_err(|source| WalArchiveError::Stored {
                stored: stored.to_string(),
                source,
            })?;
            if n == 0 {
                return Ok((crc, len));
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            len += n as u64;
        }
    }

    /// Segments of `timeline` in `wal/`, complete and partial, by segment number (a complete
    /// segment before a partial copy of the same one). Empty while the repository is unbound.
    pub fn list_segments(
        &self,
        timeline: TimelineId,
    ) -> Result<Vec<ArchivedSegment>, WalArchiveError> {
        let Some(seg_size) = self.segment_size() else {
            return Ok(Vec::new());
        };
        let suffix = layout::suffix(self.repo.codec());
        let wal = self.repo.resolve(WAL_DIR)?;
        let prefix = format!("{:08X}", timeline.0);
        let mut out = Vec::new();
        for dir in read_dir_names(&wal)? {
            if dir.len() != 16 || !dir.starts_with(&prefix) {
                continue;
            }
            for file in read_dir_names(&wal.join(&dir))? {
                let Some(base) = file.strip_suffix(suffix.as_str()) else {
                    continue;
                };
                let (seg, partial) = match base.strip_suffix(".partial") {
                    Some(s) => (s, true),
                    None => (base, false),
                };
                if !is_wal_file_name(seg) || !seg.starts_with(&dir) {
                    continue;
                }
                let Ok(name) = SegmentName::parse(seg, seg_size) else {
                    continue;
                };
                out.push(ArchivedSegment {
                    name,
                    partial,
                    stored: format!("{WAL_DIR}/{dir}/{file}"),
                });
            }
        }
        out.sort_by_key(|s| (s.name.segno, s.partial));
        Ok(out)
    }

    /// The newest complete segment of `timeline` in the archive.
    pub fn newest_segment(
        &self,
        timeline: TimelineId,
    ) -> Result<Option<SegmentName>, WalArchiveError> {
        Ok(self
            .list_segments(timeline)?
            .into_iter()
            .filter(|s| !s.partial)
            .map(|s| s.name)
            .next_back())
    }

    /// Writes archived file `name` (as restore_command's `%f` names it) to `dest`, decrypted and
    /// decompressed, durably (temporary name, fsync, rename, fsync of the directory). A segment
    /// that is not archived complete is served from the newest partial copy of it, padded with
    /// zeros, when no later segment of its timeline is archived.
    pub fn fetch(&self, name: &str, dest: &Path) -> Result<FetchOutcome, WalArchiveError> {
        let not_found = || WalArchiveError::NotFound {
            name: name.to_string(),
        };
        let file = match crate::wal::history_file_timeline(name) {
            Some(t) => ArchiveFileName::Wal(WalFileName::History(t)),
            None => {
                // Without a bound cluster there is no segment size, and no segment stored.
                let seg_size = self.segment_size();
                let parsed =
                    ArchiveFileName::parse(name, seg_size.unwrap_or(WalSegmentSize::DEFAULT));
                match (parsed, seg_size) {
                    (Ok(f), Some(_)) => f,
                    (Ok(_), None) => return Err(not_found()),
                    (Err(e), _) => return Err(e),
                }
            }
        };
        let stored = self.stored_name(&file);
        if self.repo.resolve(&stored)?.exists() {
            let expected = match &file {
                ArchiveFileName::Wal(WalFileName::Segment(s)) => Some(s.seg_size.bytes()),
                _ => None,
            };
            self.copy_out(&stored, dest, expected, None)?;
            return Ok(FetchOutcome::Archived { stored });
        }
        let ArchiveFileName::Wal(WalFileName::Segment(segment)) = file else {
            return Err(not_found());
        };
        let listed = self.list_segments(segment.timeline)?;
        if let Some(newest) = listed.iter().rev().find(|s| s.name.segno > segment.segno) {
            return Err(WalArchiveError::Gap {
                name: name.to_string(),
                newest: newest.name.to_string(),
            });
        }
        let seg_bytes = segment.seg_size.bytes();
        // A partial in wal/ (a promoted server's, or a WAL receiver's) reaches at least as far as
        // any base backup's copy of the same segment.
        if let Some(p) = listed.iter().find(|s| s.partial && s.name == segment) {
            let bytes = self.copy_out(&p.stored, dest, None, Some(seg_bytes))?;
            return Ok(FetchOutcome::FromPartial {
                stored: p.stored.clone(),
                bytes,
            });
        }
        // The segment `receive-wal` is writing: everything it has received (and fsynced).
        if let Some(mut partial) =
            crate::receive::open_partial(self.repo, &segment).map_err(|e| {
                WalArchiveError::Source {
                    name: name.to_string(),
                    source: std::io::Error::other(e.to_string()),
                }
            })?
        {
            let stored =
                crate::receive::partial_file(&segment, self.repo.codec().encryption.is_some());
            let bytes = copy_reader(&mut partial, &stored, dest, None, Some(seg_bytes))?;
            if bytes > 0 {
                return Ok(FetchOutcome::FromPartial { stored, bytes });
            }
        }
        let segment_text = segment.to_string();
        let best = Catalog::new(self.repo.dir())
            .list()?
            .into_iter()
            .filter_map(|r| {
                let p = r.partial_wal_file?;
                (p.segment == segment_text && r.wal_segment_size == seg_bytes)
                    .then(|| (p.valid_bytes, layout::backup_file(&r.id, &p.file)))
            })
            // The longest copy; among equals the newest backup (ids sort in time order).
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let Some((valid_bytes, stored)) = best else {
            return Err(not_found());
        };
        let bytes = self.copy_out(&stored, dest, Some(valid_bytes), Some(seg_bytes))?;
        Ok(FetchOutcome::FromPartial { stored, bytes })
    }

    /// Decrypts `stored` into `dest`; checks its length against `expected`, and pads it with
    /// zeros to `pad_to`. Returns the number of bytes the stored file held.
    fn copy_out(
        &self,
        stored: &str,
        dest: &Path,
        expected: Option<u64>,
        pad_to: Option<u64>,
    ) -> Result<u64, WalArchiveError> {
        let mut reader = self.repo.open_file(stored)?;
        copy_reader(&mut reader, stored, dest, expected, pad_to)
    }
}

/// Copies `reader` (the content of `stored`) into `dest`, checking its length against
/// `expected` and padding it with zeros to `pad_to`. Returns the bytes `reader` held.
fn copy_reader(
    reader: &mut dyn Read,
    stored: &str,
    dest: &Path,
    expected: Option<u64>,
    pad_to: Option<u64>,
) -> Result<u64, WalArchiveError> {
    {
        // restore_command's %p may be an existing file (RECOVERYXLOG): replacing it is intended.
        let mut out = DurableFile::create(dest)?;
        let mut buf = vec![0u8; BUFFER];
        let mut len = 0u64;
        let limit = pad_to.or(expected);
        loop {
            let n = read_some(reader, &mut buf).map_err(|source| WalArchiveError::Stored {
                stored: stored.to_string(),
                source,
            })?;
            if n == 0 {
                break;
            }
            len += n as u64;
            if limit.is_some_and(|l| len > l) {
                return Err(WalArchiveError::StoredSize {
                    stored: stored.to_string(),
                    expected: limit.unwrap_or_default(),
                    actual: len,
                });
            }
            write_dest(&mut out, &buf[..n])?;
        }
        if let Some(e) = expected.filter(|&e| e != len) {
            return Err(WalArchiveError::StoredSize {
                stored: stored.to_string(),
                expected: e,
                actual: len,
            });
        }
        if let Some(total) = pad_to {
            buf.fill(0);
            let mut left = total - len;
            while left > 0 {
                let n = left.min(BUFFER as u64) as usize;
                write_dest(&mut out, &buf[..n])?;
                left -= n as u64;
            }
        }
        out.commit(Replace::Allow)?;
        Ok(len)
    }
}

fn write_dest(out: &mut DurableFile, bytes: &[u8]) -> Result<(), WalArchiveError> {
    out.write_all(bytes).map_err(|e| {
        let kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<FsError>()) {
            Some(Ok(fs)) => WalArchiveError::Fs(*fs),
            _ => WalArchiveError::Fs(FsError::new("writing", out.dest_path(), kind.into())),
        }
    })
}

/// Validation of a file while it streams into the archive.
enum Checker {
    Segment {
        name: String,
        partial: bool,
        seg_bytes: u64,
        len: u64,
        validator: SegmentValidator,
        bound: Option<ClusterIdentity>,
    },
    /// Small text files, kept in memory up to [`MAX_TEXT_FILE`]; history files are parsed.
    Text {
        name: String,
        history: Option<TimelineId>,
        content: Vec<u8>,
    },
}

impl Checker {
    fn push(&mut self, chunk: &[u8]) -> Result<(), WalArchiveError> {
        match self {
            Checker::Segment {
                name,
                seg_bytes,
                len,
                validator,
                bound,
                ..
            } => {
                *len += chunk.len() as u64;
                if *len > *seg_bytes {
                    return Err(WalArchiveError::WrongSize {
                        name: name.clone(),
                        expected: *seg_bytes,
                        actual: *len,
                    });
                }
                validator
                    .push(chunk)
                    .map_err(|source| page_error(name, *bound, source))
            }
            Checker::Text { name, content, .. } => {
                if (content.len() + chunk.len()) as u64 > MAX_TEXT_FILE {
                    return Err(WalArchiveError::WrongSize {
                        name: name.clone(),
                        expected: MAX_TEXT_FILE,
                        actual: (content.len() + chunk.len()) as u64,
                    });
                }
                content.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<(), WalArchiveError> {
        match self {
            Checker::Segment {
                name,
                partial,
                seg_bytes,
                len,
                mut validator,
                bound,
            } => {
                if len != seg_bytes && !partial {
                    return Err(WalArchiveError::WrongSize {
                        name,
                        expected: seg_bytes,
                        actual: len,
                    });
                }
                if len == 0 {
                    return Err(WalArchiveError::WrongSize {
                        name,
                        expected: seg_bytes,
                        actual: 0,
                    });
                }
                // A partial segment is checked as if padded with zeros, as it is served.
                let zeros = vec![0u8; BUFFER];
                let mut left = seg_bytes - len;
                while left > 0 {
                    let n = left.min(BUFFER as u64) as usize;
                    validator
                        .push(&zeros[..n])
                        .map_err(|source| page_error(&name, bound, source))?;
                    left -= n as u64;
                }
                let summary = validator
                    .finish()
                    .map_err(|source| page_error(&name, bound, source))?;
                if summary.major.is_none() {
                    // Not even the first page is valid: this is not WAL at all.
                    return Err(WalArchiveError::NotWal { name });
                }
                Ok(())
            }
            Checker::Text {
                name,
                history: Some(t),
                content,
            } => TimelineHistory::parse(t, &content)
                .map(|_| ())
                .map_err(|e| WalArchiveError::InvalidHistory {
                    name,
                    detail: e.to_string(),
                }),
            Checker::Text { .. } => Ok(()),
        }
    }
}

fn page_error(name: &str, bound: Option<ClusterIdentity>, source: WalPageError) -> WalArchiveError {
    let other_cluster = matches!(
        source,
        WalPageError::SystemIdentifier { .. }
            | WalPageError::SegmentSize { .. }
            | WalPageError::WrongMajor { .. }
    );
    match bound {
        Some(bound) if other_cluster => WalArchiveError::OtherCluster {
            name: name.to_string(),
            bound,
            source,
        },
        _ => WalArchiveError::InvalidSegment {
            name: name.to_string(),
            source,
        },
    }
}

/// One `read`, retried on EINTR.
fn read_some(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Reads until `buf` is full or the stream ends.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match read_some(r, &mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Entry names of a directory (missing: none); temporary files and non-UTF-8 names are skipped.
fn read_dir_names(dir: &Path) -> Result<Vec<String>, WalArchiveError> {
    let fs_err = |source: io::Error| WalArchiveError::Fs(FsError::new("listing", dir, source));
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(fs_err(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(fs_err)?;
        if let Ok(name) = entry.file_name().into_string() {
            if !name.contains(".tmp.") {
                names.push(name);
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Aead, Encryption, Secret};
    use crate::repo::{InitOptions, KdfCost};

    const SYSID: u64 = 7_300_000_000_000_000_001;
    const MIB: u32 = 1 << 20;

    fn repo(dir: &Path, bound: bool) -> Repository {
        let options = InitOptions {
            encryption: Encryption::Aead(Aead::Aes256Gcm),
            kdf_cost: KdfCost {
                log2_n: 10,
                r: 8,
                p: 1,
            },
            ..InitOptions::default()
        };
        let mut repo = Repository::init(dir, options, Some(&Secret::from("pw"))).unwrap();
        if bound {
            repo.bind_cluster(ClusterIdentity {
                system_identifier: SYSID,
                major: 16,
                wal_segment_size: MIB,
            })
            .unwrap();
        }
        repo
    }

    /// A 1 MiB segment with `valid` page headers (the rest zero), like the server's files.
    fn segment(sysid: u64, tli: u32, segno: u64, valid: usize) -> Vec<u8> {
        let mut out = vec![0u8; MIB as usize];
        for (k, page) in out.chunks_mut(8192).take(valid).enumerate() {
            page[0..2].copy_from_slice(&0xD113u16.to_le_bytes());
            let info: u16 = if k == 0 { 2 } else { 0 };
            page[2..4].copy_from_slice(&info.to_le_bytes());
            page[4..8].copy_from_slice(&tli.to_le_bytes());
            let addr = segno * u64::from(MIB) + (k * 8192) as u64;
            page[8..16].copy_from_slice(&addr.to_le_bytes());
            page[40..48].copy_from_slice(&(segno * 1000 + k as u64).to_le_bytes());
            if k == 0 {
                page[24..32].copy_from_slice(&sysid.to_le_bytes());
                page[32..36].copy_from_slice(&MIB.to_le_bytes());
                page[36..40].copy_from_slice(&8192u32.to_le_bytes());
            }
        }
        out
    }

    fn name(s: &str) -> WalFileName {
        WalFileName::parse(s, WalSegmentSize::new(MIB.into()).unwrap()).unwrap()
    }

    fn seg_name(tli: u32, segno: u64) -> String {
        SegmentName::new(
            TimelineId(tli),
            segno,
            WalSegmentSize::new(MIB.into()).unwrap(),
        )
        .to_string()
    }

    #[test]
    fn store_is_idempotent_and_refuses_conflicts() {
        let d = tempfile::tempdir().unwrap();
        let repo = repo(&d.path().join("r"), true);
        let a = WalArchive::new(&repo);
        let n = name(&seg_name(1, 3));
        let data = segment(SYSID, 1, 3, 128);
        assert_eq!(a.store(&n, &mut &data[..]).unwrap(), StoreOutcome::Stored);
        assert_eq!(
            a.store(&n, &mut &data[..]).unwrap(),
            StoreOutcome::AlreadyPresent
        );
        let mut other = data.clone();
        other[100_000] ^= 1;
        let e = a.store(&n, &mut &other[..]).unwrap_err();
        assert!(matches!(e, WalArchiveError::Conflict { .. }), "{e}");
        assert!(e.to_string().contains(&n.to_string()), "{e}");
        // A shorter or longer copy conflicts too, and the stored one is unchanged.
        let e = a.store(&n, &mut &data[..data.len() - 1]).unwrap_err();
        assert!(matches!(e, WalArchiveError::Conflict { .. }), "{e}");
        let out = d.path().join("out");
        assert_eq!(
            a.fetch(&n.to_string(), &out).unwrap(),
            FetchOutcome::Archived {
                stored: a.stored_name(&ArchiveFileName::Wal(n))
            }
        );
        assert_eq!(std::fs::read(&out).unwrap(), data);
        let listed = a.list_segments(TimelineId(1)).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            a.newest_segment(TimelineId(1)).unwrap(),
            Some(listed[0].name)
        );
        assert_eq!(a.newest_segment(TimelineId(2)).unwrap(), None);
    }

    #[test]
    fn the_race_loser_compares_instead_of_replacing() {
        let d = tempfile::tempdir().unwrap();
        let repo = repo(&d.path().join("r"), true);
        let a = WalArchive::new(&repo);
        let n = name(&seg_name(1, 4));
        let data = segment(SYSID, 1, 4, 10);
        // The other writer finishes while we stream: simulated by storing from inside read().
        struct Racing<'x> {
            data: &'x [u8],
            archive: &'x WalArchive<'x>,
            other: Option<Vec<u8>>,
            n: WalFileName,
        }
        impl Read for Racing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if let Some(other) = self.other.take() {
                    self.archive.store(&self.n, &mut &other[..]).unwrap();
                }
                self.data.read(buf)
            }
        }
        let mut r = Racing {
            data: &data,
            archive: &a,
            other: Some(data.clone()),
            n,
        };
        assert_eq!(a.store(&n, &mut r).unwrap(), StoreOutcome::AlreadyPresent);
        let n5 = name(&seg_name(1, 5));
        let data5 = segment(SYSID, 1, 5, 10);
        let mut changed = data5.clone();
        changed[9000] = 1;
        let mut r = Racing {
            data: &data5,
            archive: &a,
            other: Some(changed.clone()),
            n: n5,
        };
        let e = a.store(&n5, &mut r).unwrap_err();
        assert!(matches!(e, WalArchiveError::Conflict { .. }), "{e}");
        let out = d.path().join("out");
        a.fetch(&n5.to_string(), &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), changed);
    }

    #[test]
    fn wrong_size_other_cluster_and_garbage_are_refused_and_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let repo = repo(&d.path().join("r"), true);
        let a = WalArchive::new(&repo);
        let n = name(&seg_name(1, 6));
        let data = segment(SYSID, 1, 6, 3);
        let e = a.store(&n, &mut &data[..1000]).unwrap_err();
        assert!(matches!(e, WalArchiveError::WrongSize { .. }), "{e}");
        let e = a
            .store(&n, &mut &segment(SYSID + 1, 1, 6, 3)[..])
            .unwrap_err();
        assert!(matches!(e, WalArchiveError::OtherCluster { .. }), "{e}");
        assert!(e.to_string().contains(&SYSID.to_string()), "{e}");
        let e = a.store(&n, &mut &segment(SYSID, 1, 7, 3)[..]).unwrap_err();
        assert!(matches!(e, WalArchiveError::NotWal { .. }), "{e}");
        let e = a.store(&n, &mut &vec![7u8; MIB as usize][..]).unwrap_err();
        assert!(matches!(e, WalArchiveError::InvalidSegment { .. }), "{e}");
        let h = name("00000002.history");
        let e = a.store(&h, &mut &b"garbage\n"[..]).unwrap_err();
        assert!(matches!(e, WalArchiveError::InvalidHistory { .. }), "{e}");
        assert!(a.list_segments(TimelineId(1)).unwrap().is_empty());
        let e = a.fetch(&n.to_string(), &d.path().join("o")).unwrap_err();
        assert!(matches!(e, WalArchiveError::NotFound { .. }), "{e}");
        assert!(!d.path().join("o").exists());
        let e = ArchiveFileName::parse("RECOVERYXLOG", WalSegmentSize::DEFAULT).unwrap_err();
        assert!(matches!(e, WalArchiveError::InvalidName { .. }), "{e}");
    }

    #[test]
    fn history_and_backup_history_files_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let repo = repo(&d.path().join("r"), false);
        let a = WalArchive::new(&repo);
        let h = name("00000002.history");
        let content = b"1\t0/3000000\tno recovery target specified\n";
        assert_eq!(
            a.store(&h, &mut &content[..]).unwrap(),
            StoreOutcome::Stored
        );
        let out = d.path().join("h");
        a.fetch("00000002.history", &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), content);
        let b = ArchiveFileName::parse(
            "000000010000000000000002.00000028.backup",
            WalSegmentSize::DEFAULT,
        )
        .unwrap();
        assert_eq!(
            a.store_file(&b, &mut &b"START WAL LOCATION: 0/2000028\n"[..])
                .unwrap(),
            StoreOutcome::Stored
        );
        // Unbound: no segment size, so no segment can be there.
        let e = a.fetch(&seg_name(1, 2), &out).unwrap_err();
        assert!(matches!(e, WalArchiveError::NotFound { .. }), "{e}");
        let e = a.fetch("00000003.history", &out).unwrap_err();
        assert!(matches!(e, WalArchiveError::NotFound { .. }), "{e}");
        assert_eq!(std::fs::read(&out).unwrap(), content);
    }

    #[test]
    fn a_partial_is_served_padded_only_as_the_newest_of_its_timeline() {
        let d = tempfile::tempdir().unwrap();
        let repo = repo(&d.path().join("r"), true);
        let a = WalArchive::new(&repo);
        let full = segment(SYSID, 1, 8, 20);
        let prefix = &full[..5 * 8192 + 100];
        let p = name(&format!("{}.partial", seg_name(1, 8)));
        assert_eq!(a.store(&p, &mut &prefix[..]).unwrap(), StoreOutcome::Stored);
        let out = d.path().join("out");
        let got = a.fetch(&seg_name(1, 8), &out).unwrap();
        assert!(
            matches!(got, FetchOutcome::FromPartial { bytes, .. } if bytes == prefix.len() as u64),
            "{got:?}"
        );
        let fetched = std::fs::read(&out).unwrap();
        assert_eq!(fetched.len(), MIB as usize);
        assert_eq!(&fetched[..prefix.len()], prefix);
        assert!(fetched[prefix.len()..].iter().all(|&b| b == 0));
        // Asked for by its own name, the partial comes back as stored.
        a.fetch(&p.to_string(), &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), prefix);
        // A later segment of the timeline: the partial is no longer the end, so it is a gap.
        let n9 = name(&seg_name(1, 9));
        a.store(&n9, &mut &segment(SYSID, 1, 9, 2)[..]).unwrap();
        let e = a.fetch(&seg_name(1, 8), &out).unwrap_err();
        assert!(matches!(e, WalArchiveError::Gap { .. }), "{e}");
        // The complete segment wins once archived.
        a.store(&name(&seg_name(1, 8)), &mut &full[..]).unwrap();
        let got = a.fetch(&seg_name(1, 8), &out).unwrap();
        assert!(matches!(got, FetchOutcome::Archived { .. }), "{got:?}");
        assert_eq!(std::fs::read(&out).unwrap(), full);
        let listed: Vec<(u64, bool)> = a
            .list_segments(TimelineId(1))
            .unwrap()
            .iter()
            .map(|s| (s.name.segno, s.partial))
            .collect();
        assert_eq!(listed, vec![(8, false), (8, true), (9, false)]);
        assert_eq!(
            a.newest_segment(TimelineId(1)).unwrap().map(|s| s.segno),
            Some(9)
        );
    }

    #[test]
    fn segment_cluster_reads_the_long_header() {
        let s = segment(SYSID, 1, 3, 1);
        assert_eq!(
            segment_cluster(&s[..40]),
            Some(ClusterIdentity {
                system_identifier: SYSID,
                major: 16,
                wal_segment_size: MIB
            })
        );
        assert_eq!(segment_cluster(&[0u8; 40]), None);
        assert_eq!(segment_cluster(&s[..39]), None);
    }

    /// The segment `receive-wal` is still writing is served, zero-padded, so recovery reaches
    /// the last byte received; once a later segment exists it is a gap instead.
    #[test]
    fn fetch_serves_receive_wal_partial_padded() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path(), true);
        let archive = WalArchive::new(&repo);
        let seg_size = WalSegmentSize::new(MIB.into()).unwrap();
        let seg = SegmentName::new(pgwire_repl::TimelineId(1), 5, seg_size);
        let data = segment_bytes_prefix(5, 3 * 8192);
        let identity = crate::receive::partial_file(&seg, true);
        let path = repo.resolve(&identity).unwrap();
        crate::fsutil::create_dir_all_durably(path.parent().unwrap()).unwrap();
        let mut w =
            crate::receive::partial::PartialWriter::create(&path, &identity, seg, repo.codec())
                .unwrap();
        w.append(&data).unwrap();
        w.sync().unwrap();
        drop(w);
        let dest = dir.path().join("RECOVERYXLOG");
        match archive.fetch(&seg.to_string(), &dest).unwrap() {
            FetchOutcome::FromPartial { bytes, .. } => assert_eq!(bytes, data.len() as u64),
            other => panic!("{other:?}"),
        }
        let got = std::fs::read(&dest).unwrap();
        assert_eq!(got.len(), MIB as usize);
        assert_eq!(&got[..data.len()], &data[..]);
        assert!(got[data.len()..].iter().all(|&b| b == 0));

        // A later complete segment makes the partial's segment a gap, not a short answer.
        let later = segment(SYSID, 1, 6, 128);
        archive
            .store(&name(&seg_name(1, 6)), &mut &later[..])
            .unwrap();
        assert!(matches!(
            archive.fetch(&seg.to_string(), &dest),
            Err(WalArchiveError::Gap { .. })
        ));
    }

    fn segment_bytes_prefix(segno: u64, len: usize) -> Vec<u8> {
        segment(SYSID, 1, segno, len / 8192)[..len].to_vec()
    }
}
