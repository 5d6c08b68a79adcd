//! Exit codes. They are part of the interface (scripts and monitoring depend on them) and are
//! documented in docs/cli.md; never renumber one.

use std::process::ExitCode;

use backup_core::basebackup::BaseBackupError;
use backup_core::catalog::CatalogError;
use backup_core::restore::RestoreError;
use backup_core::store::StoreError;
use backup_core::verify::VerifyError;
use backup_core::{FileError, PassphraseError, RepoError};

/// What kind of failure ended the command.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Anything not classified below (a bug, an unexpected internal state).
    Other = 1,
    /// Bad arguments or settings (clap also uses 2).
    Usage = 2,
    /// The server could not be reached, refused TLS, or refused to authenticate us.
    Connection = 3,
    /// The server reported an error while running the operation.
    Server = 4,
    /// The repository is missing, locked, bound to another cluster, or the passphrase is wrong.
    Repository = 5,
    /// Data failed verification: a manifest mismatch, a checksum or authentication failure.
    Verification = 6,
    /// A local I/O error: disk full, permissions, a missing directory.
    LocalIo = 7,
    /// The object store refused or could not be reached (credentials, bucket, region,
    /// endpoint), after retries.
    Storage = 8,
    /// `drill`: the restore, recovery or a check failed (the report says which).
    DrillFailed = 11,
    /// `demo`: a step failed (the message names it).
    DemoFailed = 12,
    /// Stopped by SIGINT or SIGTERM before finishing.
    Interrupted = 130,
}

impl Failure {
    pub fn code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

/// An error that already knows its exit code.
#[derive(Debug)]
pub struct Classified {
    pub failure: Failure,
    pub error: anyhow::Error,
}

impl std::fmt::Display for Classified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&message(&self.error))
    }
}

/// The error and its causes on one line, `outer: inner: ...`. Many library errors already
/// print their source in their own message; a cause whose text is already there is not
/// repeated (`{:#}` would print "lost: closed unexpectedly: closed unexpectedly").
pub fn message(err: &anyhow::Error) -> String {
    let mut text = String::new();
    let hint = hint(err);
    for cause in err.chain() {
        if hint.as_ref().is_some_and(|h| cause.to_string() == *h) {
            continue;
        }
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

impl std::error::Error for Classified {}

/// What to do about an error, printed under it (`pgstream: hint: ...`); carried in the chain.
#[derive(Debug)]
pub struct Hint(pub String);

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Hint {}

/// The hint attached to `err`, if any.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    // anyhow finds a context type through every layer of context.
    err.downcast_ref::<Hint>().map(|h| h.0.clone())
}

/// The server errors in `err` as (SQLSTATE, message), every host's when all refused.
fn server_errors(err: &anyhow::Error) -> Vec<(String, String)> {
    fn client(e: &pgwire_repl::Error, out: &mut Vec<(String, String)>) {
        match e {
            pgwire_repl::Error::AllHostsFailed(all) => all.iter().for_each(|e| client(e, out)),
            e => out.extend(
                e.as_db_error()
                    .map(|db| (db.code.clone(), db.message.clone())),
            ),
        }
    }
    let mut out = Vec::new();
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<pgwire_repl::Error>() {
            client(e, &mut out);
        }
        if let Some(BaseBackupError::Client(e)) = cause.downcast_ref::<BaseBackupError>() {
            client(e, &mut out);
        }
        if let Some(backup_core::receive::ReceiveError::Client(e)) =
            cause.downcast_ref::<backup_core::receive::ReceiveError>()
        {
            client(e, &mut out);
        }
    }
    out
}

/// For a walsender refused to a role without REPLICATION: the fix that `pgstream check`
/// prints. Only SQLSTATE 42501 about starting a WAL sender ("permission denied to start WAL
/// sender", before 16 "must be superuser or replication role to start walsender"); 42501 is
/// also a file the server cannot read, which no ALTER ROLE fixes.
pub fn replication_role_hint(err: anyhow::Error, role: &str) -> anyhow::Error {
    let walsender_refused = server_errors(&err).iter().any(|(code, message)| {
        let m = message.to_ascii_lowercase();
        code == "42501" && (m.contains("wal sender") || m.contains("walsender"))
    });
    if !walsender_refused {
        return err;
    }
    err.context(Hint(format!(
        "the role needs the REPLICATION attribute; as a superuser run: {} \
         (pgstream check --source ... lists every problem with its fix)",
        alter_role_replication(role)
    )))
}

/// `ALTER ROLE name WITH REPLICATION;`, the name quoted when it needs to be.
pub fn alter_role_replication(role: &str) -> String {
    format!("ALTER ROLE {} WITH REPLICATION;", quote_ident(role))
}

/// An SQL identifier, double-quoted unless it is lower-case letters, digits and underscores.
pub fn quote_ident(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Attaches an exit code to an error.
pub fn classified(failure: Failure, error: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        failure,
        error: error.into(),
    })
}

/// The exit code for an error: an explicit classification wins, else the first error in the
/// chain whose type tells.
pub fn classify(err: &anyhow::Error) -> Failure {
    // The object store failing is exit code 8 whatever layer it surfaced through (a sink's
    // write, a restore's read), unless a layer already decided.
    if !err.chain().any(|c| c.is::<Classified>()) && store_failed(err) {
        return Failure::Storage;
    }
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<Classified>() {
            return c.failure;
        }
        if let Some(e) = cause.downcast_ref::<pgwire_repl::Error>() {
            return classify_client(e);
        }
        if let Some(e) = cause.downcast_ref::<BaseBackupError>() {
            return classify_base(e);
        }
        if let Some(e) = cause.downcast_ref::<RestoreError>() {
            return classify_restore(e);
        }
        if let Some(e) = cause.downcast_ref::<VerifyError>() {
            return classify_verify(e);
        }
        if let Some(e) = cause.downcast_ref::<RepoError>() {
            return classify_repo(e);
        }
        if let Some(e) = cause.downcast_ref::<FileError>() {
            return classify_file(e);
        }
        if cause.downcast_ref::<PassphraseError>().is_some() {
            return Failure::Usage;
        }
        if let Some(e) = cause.downcast_ref::<CatalogError>() {
            return classify_catalog(e);
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return classify_store(e);
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Failure::Interrupted;
            }
            return Failure::LocalIo;
        }
    }
    Failure::Other
}

/// Whether the object store refused or could not be reached somewhere in `err`'s chain,
/// including inside an `io::Error` (the storage port's `Read`/`Write` adapters wrap it).
fn store_failed(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let store = cause.downcast_ref::<StoreError>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(StoreError::from_io)
        });
        matches!(store, Some(StoreError::Remote { .. }))
    })
}

fn classify_base(e: &BaseBackupError) -> Failure {
    use BaseBackupError as B;
    match e {
        B::Client(c) => classify_client(c),
        B::Repo(r) => classify_repo(r),
        B::Catalog(c) => classify_catalog(c),
        B::WalConflict { .. } | B::Archive(_) => Failure::Repository,
        B::Fs(_) | B::Sink { .. } => Failure::LocalIo,
        B::Tar { .. }
        | B::Decompress { .. }
        | B::Manifest(_)
        | B::Verification { .. }
        | B::NoManifest => Failure::Verification,
        B::UnsupportedServer { .. }
        | B::DifferentClusters { .. }
        | B::TimelineChanged { .. }
        | B::WalStreamEnded { .. }
        | B::UnsafeTablespace { .. } => Failure::Server,
        B::Cancelled => Failure::Interrupted,
        // Stands in for the opening error, which `pgstream base` reports instead.
        B::RepositoryNotOpened => Failure::Repository,
        B::Internal(_) => Failure::Other,
    }
}

fn classify_restore(e: &RestoreError) -> Failure {
    use RestoreError as R;
    match e {
        R::Catalog(c) => classify_catalog(c),
        R::Repo(r) => classify_repo(r),
        R::Fs(_) => Failure::LocalIo,
        R::TargetNotEmpty { .. } | R::UnknownTablespace { .. } | R::UnsafeTablespaceMap { .. } => {
            Failure::Usage
        }
        R::UnsafeRecordedTablespace { .. } => Failure::Verification,
        R::Read { source, .. } => match FileError::from_io(source) {
            Some(f) => classify_file(f),
            None => Failure::Verification,
        },
        R::Extract(x) => match x {
            backup_core::restore::extract::ExtractError::Write { .. } => Failure::LocalIo,
            _ => Failure::Verification,
        },
        R::WalSize { .. } => Failure::Verification,
        R::Internal(_) => Failure::Other,
    }
}

fn classify_verify(e: &VerifyError) -> Failure {
    match e {
        VerifyError::Catalog(c) => classify_catalog(c),
        VerifyError::Repo(r) => classify_repo(r),
        VerifyError::Store(s) => classify_store(s),
    }
}

pub(crate) fn classify_catalog(e: &CatalogError) -> Failure {
    match e {
        CatalogError::Damaged { .. } | CatalogError::InvalidRecord { .. } => Failure::Verification,
        CatalogError::Store(s) => classify_store(s),
        CatalogError::NoSuchBackup { .. } | CatalogError::NoBackups | CatalogError::Busy { .. } => {
            Failure::Repository
        }
    }
}

/// Failures of the storage port: a lease held by another process is the repository being in
/// use (5); an object too large to be one of ours is damage (6); I/O is local I/O (7).
pub(crate) fn classify_store(e: &StoreError) -> Failure {
    match e {
        StoreError::LeaseHeld { .. }
        | StoreError::AlreadyExists { .. }
        | StoreError::NotFound { .. } => Failure::Repository,
        StoreError::TooLarge { .. } => Failure::Verification,
        StoreError::BadName { .. }
        | StoreError::Unsupported { .. }
        | StoreError::Unavailable { .. } => Failure::Usage,
        StoreError::Io { .. } => Failure::LocalIo,
        StoreError::Remote { .. } => Failure::Storage,
    }
}

pub(crate) fn classify_repo(e: &RepoError) -> Failure {
    match e {
        RepoError::Store(s) => classify_store(s),
        RepoError::Sink(backup_core::SinkError::Store(s)) => classify_store(s),
        RepoError::Sink(_) => Failure::LocalIo,
        RepoError::File(f) => classify_file(f),
        RepoError::Invalid(_) | RepoError::NotEmpty { .. } => Failure::Usage,
        _ => Failure::Repository,
    }
}

fn classify_file(e: &FileError) -> Failure {
    match e {
        FileError::Io { .. } => Failure::LocalIo,
        FileError::NoKey { .. } | FileError::UnsupportedVersion { .. } => Failure::Repository,
        _ => Failure::Verification,
    }
}

fn classify_client(e: &pgwire_repl::Error) -> Failure {
    use pgwire_repl::Error as E;
    match e {
        E::Config(_) | E::InvalidArgument(_) => Failure::Usage,
        E::Connect { .. }
        | E::ConnectTimeout { .. }
        | E::Tls { .. }
        | E::Auth { .. }
        | E::SessionAttrs { .. }
        | E::AllHostsFailed(_)
        | E::ConnectionLost(_) => Failure::Connection,
        // Authentication and authorization failures (28xxx) are connection problems to fix
        // in pg_hba.conf or the role, not failures of the operation.
        E::Server(db) if db.code.starts_with("28") => Failure::Connection,
        E::Server(_) | E::Unsupported { .. } | E::UnexpectedResult { .. } => Failure::Server,
        E::Protocol(_) => Failure::Server,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_classification_wins_through_context() {
        let e = classified(Failure::Verification, anyhow::anyhow!("bad checksum"));
        let e = e.context("verifying backup");
        assert_eq!(classify(&e), Failure::Verification);
    }

    #[test]
    fn io_errors_are_local() {
        let e = anyhow::Error::new(std::io::Error::other("disk full")).context("writing");
        assert_eq!(classify(&e), Failure::LocalIo);
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        #[derive(Debug)]
        struct Lost(std::io::Error);
        impl std::fmt::Display for Lost {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "connection lost: {}", self.0)
            }
        }
        impl std::error::Error for Lost {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Lost(std::io::Error::other("closed unexpectedly")))
            .context("base backup failed");
        assert_eq!(
            message(&e),
            "base backup failed: connection lost: closed unexpectedly"
        );
        let e = classified(Failure::Usage, anyhow::anyhow!("bad flag")).context("parsing");
        assert_eq!(message(&e), "parsing: bad flag");
    }

    #[test]
    fn base_refused_for_a_role_without_replication_hints_alter_role() {
        let refused = pgwire_repl::Error::Server(Box::new(pgwire_repl::DbError {
            severity: "FATAL".into(),
            code: "42501".into(),
            message: "permission denied to start WAL sender".into(),
            ..pgwire_repl::DbError::default()
        }));
        let e = anyhow::Error::new(BaseBackupError::Client(refused)).context("base backup failed");
        let e = replication_role_hint(e, "Plain");
        assert_eq!(
            hint(&e)
                .as_deref()
                .map(|h| h.contains("ALTER ROLE \"Plain\" WITH REPLICATION;")),
            Some(true)
        );
        assert!(!message(&e).contains("ALTER ROLE"), "{}", message(&e));
        assert_eq!(classify(&e), Failure::Server);
        let other = replication_role_hint(anyhow::anyhow!("disk full"), "plain");
        assert!(hint(&other).is_none());
        // 42501 for a file the server cannot read: no ALTER ROLE hint.
        let unreadable = pgwire_repl::Error::Server(Box::new(pgwire_repl::DbError {
            severity: "ERROR".into(),
            code: "42501".into(),
            message: "could not open file \"./x\": Permission denied".into(),
            ..pgwire_repl::DbError::default()
        }));
        let e = replication_role_hint(anyhow::Error::new(BaseBackupError::Client(unreadable)), "p");
        assert!(hint(&e).is_none());
    }

    #[test]
    fn unknown_errors_are_other() {
        assert_eq!(classify(&anyhow::anyhow!("?")), Failure::Other);
    }
}
