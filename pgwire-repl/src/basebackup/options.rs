//! BASE_BACKUP options and the command text for each server major version.
//!
//! The syntax changed incompatibly in PostgreSQL 15: v12–14 accept only space-separated
//! keywords (`PROGRESS FAST NOWAIT …`), v15+ only a parenthesised option list, and each is a
//! syntax error on the other side. So the text is rendered for one server major.

use std::fmt;

use crate::quote::{quote_literal, QuoteError};

/// The label pgstream gives its backups unless told otherwise.
pub const DEFAULT_LABEL: &str = "pgstream base backup";
/// The oldest server BASE_BACKUP can be rendered for.
pub const MIN_SERVER_MAJOR: u32 = 12;
/// The slowest MAX_RATE the server accepts, in kB/s.
pub const MAX_RATE_MIN_KB: u32 = 32;
/// The fastest MAX_RATE the server accepts, in kB/s (1 GB/s).
pub const MAX_RATE_MAX_KB: u32 = 1_048_576;
/// The longest label the server accepts (MAXPGPATH), in bytes.
pub const MAX_LABEL_BYTES: usize = 1024;
/// The first server with incremental backups (`UPLOAD_MANIFEST`, `BASE_BACKUP (INCREMENTAL)`).
pub const MIN_INCREMENTAL_MAJOR: u32 = 17;

/// How the server runs the backup's starting checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checkpoint {
    /// As fast as possible (more I/O at once).
    Fast,
    /// Spread over checkpoint_completion_target, as a normal checkpoint is.
    #[default]
    Spread,
}

/// Whether the server sends a backup manifest (v13+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Manifest {
    No,
    #[default]
    Yes,
    /// Hex-encode every file name in the manifest, even UTF-8 ones.
    ForceEncode,
}

impl Manifest {
    /// The value the server expects.
    pub fn as_str(self) -> &'static str {
        match self {
            Manifest::No => "no",
            Manifest::Yes => "yes",
            Manifest::ForceEncode => "force-encode",
        }
    }
}

/// The per-file checksum algorithm of the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestChecksums {
    None,
    #[default]
    Crc32c,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl ManifestChecksums {
    /// The name the server (and the manifest's `Checksum-Algorithm`) uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ManifestChecksums::None => "NONE",
            ManifestChecksums::Crc32c => "CRC32C",
            ManifestChecksums::Sha224 => "SHA224",
            ManifestChecksums::Sha256 => "SHA256",
            ManifestChecksums::Sha384 => "SHA384",
            ManifestChecksums::Sha512 => "SHA512",
        }
    }
}

impl fmt::Display for ManifestChecksums {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A server-side compression algorithm (v15+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionMethod {
    Gzip,
    Lz4,
    Zstd,
}

impl CompressionMethod {
    /// The value the server expects.
    pub fn as_str(self) -> &'static str {
        match self {
            CompressionMethod::Gzip => "gzip",
            CompressionMethod::Lz4 => "lz4",
            CompressionMethod::Zstd => "zstd",
        }
    }

    /// The suffix the server appends to archive names (`base.tar.lz4`).
    pub fn archive_suffix(self) -> &'static str {
        match self {
            CompressionMethod::Gzip => ".gz",
            CompressionMethod::Lz4 => ".lz4",
            CompressionMethod::Zstd => ".zst",
        }
    }
}

/// Server-side compression of the archives (v15+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCompression {
    pub method: CompressionMethod,
    /// COMPRESSION_DETAIL: a level (`"5"`) or `level=N,workers=N,long`; the server validates it.
    pub detail: Option<String>,
}

/// What to ask BASE_BACKUP for. The defaults are pg_basebackup's (`-Ft`, `-X stream`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupOptions {
    /// Recorded in backup_label.
    pub label: String,
    /// Ask for tablespace sizes up front (PROGRESS).
    pub progress: bool,
    pub checkpoint: Checkpoint,
    /// Put the WAL needed for consistency into the main archive (`-X fetch`).
    pub wal: bool,
    /// Wait for the WAL to be archived before finishing. pg_basebackup turns this off whenever
    /// it gets the WAL itself (fetch or stream).
    pub wait_for_wal_archive: bool,
    /// Throttle the server, in kB/s (32..=1048576); `None` = no limit.
    pub max_rate_kb: Option<u32>,
    /// Send a tablespace_map file instead of the `pg_tblspc` symlinks, as pg_basebackup `-Ft` does.
    pub tablespace_map: bool,
    /// Have the server verify page checksums (failures end the backup with SQLSTATE XX001).
    pub verify_checksums: bool,
    /// Ignored below v13, where the server cannot make a manifest (see [`Self::expects_manifest`]).
    pub manifest: Manifest,
    /// Leave at the default (CRC32C) when `manifest` is `No`.
    pub manifest_checksums: ManifestChecksums,
    /// v15+ only.
    pub server_compression: Option<ServerCompression>,
    /// INCREMENTAL (v17+): relation files changed since the backup whose manifest was
    /// uploaded on this connection (`Connection::upload_manifest`) arrive as
    /// `INCREMENTAL.<name>`. The server refuses it without that upload or with
    /// `summarize_wal = off`.
    pub incremental: bool,
}

impl Default for BaseBackupOptions {
    fn default() -> Self {
        BaseBackupOptions {
            label: DEFAULT_LABEL.to_string(),
            progress: true,
            checkpoint: Checkpoint::Spread,
            wal: false,
            wait_for_wal_archive: true,
            max_rate_kb: None,
            tablespace_map: true,
            verify_checksums: true,
            manifest: Manifest::Yes,
            manifest_checksums: ManifestChecksums::Crc32c,
            server_compression: None,
            incremental: false,
        }
    }
}

/// Options that cannot be sent to this server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaseBackupOptionsError {
    #[error(
        "BASE_BACKUP needs PostgreSQL {MIN_SERVER_MAJOR} or later; the server is {server_major}"
    )]
    UnsupportedServer { server_major: u32 },
    #[error(
        "server-side compression needs PostgreSQL 15 or later; the server is {server_major}: \
         turn server compression off and compress on the client instead"
    )]
    ServerCompressionUnsupported { server_major: u32 },
    #[error(
        "maximum transfer rate {kb} kB/s is outside the range the server accepts \
         ({MAX_RATE_MIN_KB} to {MAX_RATE_MAX_KB} kB/s); leave it unset for no limit"
    )]
    MaxRateOutOfRange { kb: u32 },
    #[error(
        "manifest checksums {checksums} were requested with the backup manifest turned off; \
         turn the manifest on or leave the checksum algorithm at its default"
    )]
    ManifestChecksumsWithoutManifest { checksums: ManifestChecksums },
    #[error("invalid backup label: {0}")]
    Label(#[source] QuoteError),
    #[error("the backup label is {len} bytes long; the server accepts at most {MAX_LABEL_BYTES}")]
    LabelTooLong { len: usize },
    #[error("the backup label {0:?} contains a line break, which would corrupt backup_label")]
    LabelLineBreak(String),
    #[error("invalid compression detail: {0}")]
    CompressionDetail(#[source] QuoteError),
    #[error("the compression detail is empty; leave it unset for the method's default level")]
    EmptyCompressionDetail,
    #[error(
        "incremental backups need PostgreSQL {MIN_INCREMENTAL_MAJOR} or later; the server is \
         {server_major}: take a full backup"
    )]
    IncrementalUnsupported { server_major: u32 },
}

/// Whether BASE_BACKUP on this server sends one CopyOut of `n`/`d`/`p`/`m` messages (v15+)
/// rather than one CopyOut per tablespace followed by a manifest CopyOut (v12–14).
pub fn uses_new_protocol(server_major: u32) -> bool {
    server_major >= 15
}

impl BaseBackupOptions {
    /// Whether the server will send a backup manifest with these options.
    pub fn expects_manifest(&self, server_major: u32) -> bool {
        server_major >= 13 && self.manifest != Manifest::No
    }

    /// The BASE_BACKUP command for a server of this major version.
    pub fn command(&self, server_major: u32) -> Result<String, BaseBackupOptionsError> {
        use BaseBackupOptionsError as E;
        if server_major < MIN_SERVER_MAJOR {
            return Err(E::UnsupportedServer { server_major });
        }
        if self.server_compression.is_some() && !uses_new_protocol(server_major) {
            return Err(E::ServerCompressionUnsupported { server_major });
        }
        if self.incremental && server_major < MIN_INCREMENTAL_MAJOR {
            return Err(E::IncrementalUnsupported { server_major });
        }
        if let Some(kb) = self.max_rate_kb {
            if !(MAX_RATE_MIN_KB..=MAX_RATE_MAX_KB).contains(&kb) {
                return Err(E::MaxRateOutOfRange { kb });
            }
        }
        if self.manifest == Manifest::No && self.manifest_checksums != ManifestChecksums::default()
        {
            return Err(E::ManifestChecksumsWithoutManifest {
                checksums: self.manifest_checksums,
            });
        }
        if self.label.len() > MAX_LABEL_BYTES {
            return Err(E::LabelTooLong {
                len: self.label.len(),
            });
        }
        if self.label.contains(['\n', '\r']) {
            return Err(E::LabelLineBreak(self.label.clone()));
        }
        let label = quote_literal(&self.label).map_err(E::Label)?;
        let compression = match &self.server_compression {
            None => None,
            Some(c) => {
                let detail = match c.detail.as_deref() {
                    None => None,
                    Some("") => return Err(E::EmptyCompressionDetail),
                    Some(d) => Some(quote_literal(d).map_err(E::CompressionDetail)?),
                };
                Some((c.method, detail))
            }
        };
        let manifest = self.expects_manifest(server_major);

        if !uses_new_protocol(server_major) {
            let mut parts = vec!["BASE_BACKUP".to_string(), "LABEL".to_string(), label];
            push_if(&mut parts, self.progress, "PROGRESS");
            push_if(&mut parts, self.checkpoint == Checkpoint::Fast, "FAST");
            push_if(&mut parts, self.wal, "WAL");
            push_if(&mut parts, !self.wait_for_wal_archive, "NOWAIT");
            if let Some(kb) = self.max_rate_kb {
                parts.push(format!("MAX_RATE {kb}"));
            }
            push_if(&mut parts, self.tablespace_map, "TABLESPACE_MAP");
            push_if(&mut parts, !self.verify_checksums, "NOVERIFY_CHECKSUMS");
            if manifest {
                parts.push(format!("MANIFEST '{}'", self.manifest.as_str()));
                parts.push(format!("MANIFEST_CHECKSUMS '{}'", self.manifest_checksums));
            }
            return Ok(parts.join(" "));
        }

        let mut opts = vec![format!("LABEL {label}")];
        push_if(&mut opts, self.progress, "PROGRESS");
        push_if(
            &mut opts,
            self.checkpoint == Checkpoint::Fast,
            "CHECKPOINT 'fast'",
        );
        push_if(&mut opts, self.wal, "WAL");
        push_if(&mut opts, !self.wait_for_wal_archive, "WAIT 0");
        if let Some(kb) = self.max_rate_kb {
            opts.push(format!("MAX_RATE {kb}"));
        }
        push_if(&mut opts, self.tablespace_map, "TABLESPACE_MAP");
        push_if(&mut opts, !self.verify_checksums, "VERIFY_CHECKSUMS 0");
        if manifest {
            opts.push(format!("MANIFEST '{}'", self.manifest.as_str()));
            opts.push(format!("MANIFEST_CHECKSUMS '{}'", self.manifest_checksums));
        }
        opts.push("TARGET 'client'".to_string());
        push_if(&mut opts, self.incremental, "INCREMENTAL");
        if let Some((method, detail)) = compression {
            opts.push(format!("COMPRESSION '{}'", method.as_str()));
            if let Some(d) = detail {
                opts.push(format!("COMPRESSION_DETAIL {d}"));
            }
        }
        Ok(format!("BASE_BACKUP ({})", opts.join(", ")))
    }
}

fn push_if(v: &mut Vec<String>, on: bool, text: &str) {
    if on {
        v.push(text.to_string());
    }
}

#[cfg(test)]
mod tests;
