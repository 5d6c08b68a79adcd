//! Where a repository lives: `--repo /path`, `--repo file:///path`, and (parsed now, served by
//! the object-store backend) `--repo s3://bucket/prefix`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A repository's location, as the user names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RepoLocation {
    /// A directory on a local (or locally mounted) filesystem.
    Local(PathBuf),
    /// A bucket and key prefix on S3-compatible object storage (no leading or trailing `/`).
    S3 { bucket: String, prefix: String },
    /// An in-memory store (tests only; never parsed from user input).
    Memory(String),
}

/// Why a `--repo` value is not a location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid repository location {given:?}: {reason}")]
pub struct LocationError {
    /// What was given.
    pub given: String,
    /// What is wrong, and what to write instead.
    pub reason: String,
}

impl RepoLocation {
    /// A local directory.
    pub fn local(path: impl Into<PathBuf>) -> RepoLocation {
        RepoLocation::Local(path.into())
    }

    /// The local directory, for a local repository.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            RepoLocation::Local(p) => Some(p),
            _ => None,
        }
    }

    /// The same location with a local path made absolute (against the current directory,
    /// symlinks resolved where the directory exists), for text that outlives this process:
    /// a `restore_command` runs in the server's working directory, not ours.
    pub fn absolute(&self) -> RepoLocation {
        match self {
            RepoLocation::Local(p) => {
                let abs = p.canonicalize().unwrap_or_else(|_| {
                    if p.is_absolute() {
                        p.clone()
                    } else {
                        std::env::current_dir()
                            .map(|d| d.join(p))
                            .unwrap_or_else(|_| p.clone())
                    }
                });
                RepoLocation::Local(abs)
            }
            other => other.clone(),
        }
    }

    /// The short name of the kind of store, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            RepoLocation::Local(_) => "local",
            RepoLocation::S3 { .. } => "S3",
            RepoLocation::Memory(_) => "in-memory",
        }
    }
}

impl fmt::Display for RepoLocation {
    /// A local repository shows as its path (as given), an S3 one as its URL: each is accepted
    /// back by `--repo`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoLocation::Local(p) => write!(f, "{}", p.display()),
            RepoLocation::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RepoLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            RepoLocation::Memory(name) => write!(f, "mem://{name}"),
        }
    }
}

impl FromStr for RepoLocation {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<RepoLocation, LocationError> {
        let err = |reason: &str| LocationError {
            given: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(err(
                "it is empty; give a directory or an s3://bucket/prefix URL",
            ));
        }
        if s.contains('\0') {
            return Err(err("it contains a NUL byte"));
        }
        if let Some(rest) = s.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(err(
                    "a file URL needs an absolute path and no host: file:///path/to/repo",
                ));
            }
            let path = percent_decode(rest).ok_or_else(|| err("bad %-escape in the file URL"))?;
            return Ok(RepoLocation::Local(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket).map_err(|r| err(&r))?;
            let prefix = prefix.trim_end_matches('/');
            if prefix.starts_with('/')
                || prefix
                    .split('/')
                    .any(|c| c.is_empty() && !prefix.is_empty())
            {
                return Err(err("the key prefix has an empty component (`//`)"));
            }
            if prefix.split('/').any(|c| c == "." || c == "..") {
                return Err(err("the key prefix has a `.` or `..` component"));
            }
            return Ok(RepoLocation::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if let Some((scheme, _)) = s.split_once("://") {
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+')
            {
                return Err(err(&format!(
                    "unknown scheme {scheme:?}: use a directory path, file:///path or s3://bucket/prefix"
                )));
            }
        }
        Ok(RepoLocation::Local(PathBuf::from(s)))
    }
}

/// S3 bucket naming rules (the ones that matter for addressing).
fn check_bucket(bucket: &str) -> Result<(), String> {
    if !(3..=63).contains(&bucket.len()) {
        return Err(format!(
            "bucket name {bucket:?} must be 3 to 63 characters long"
        ));
    }
    let ok_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ends_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ok_chars || !ends_ok(bucket.bytes().next()) || !ends_ok(bucket.bytes().last()) {
        return Err(format!(
            "bucket name {bucket:?} may hold only lower-case letters, digits, `-` and `.`, \
             and must start and end with a letter or digit"
        ));
    }
    Ok(())
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RepoLocation, LocationError> {
        s.parse()
    }

    #[test]
    fn paths_and_file_urls_are_local() {
        assert_eq!(
            parse("/backups/main").unwrap(),
            RepoLocation::local("/backups/main")
        );
        assert_eq!(parse("rel/dir").unwrap(), RepoLocation::local("rel/dir"));
        assert_eq!(
            parse("file:///backups/my%20repo").unwrap(),
            RepoLocation::local("/backups/my repo")
        );
        assert!(parse("file://host/x").is_err());
        assert!(parse("file:///bad%zz").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn s3_urls_name_a_bucket_and_prefix() {
        assert_eq!(
            parse("s3://my-bucket/pg/main/").unwrap(),
            RepoLocation::S3 {
                bucket: "my-bucket".into(),
                prefix: "pg/main".into()
            }
        );
        let bare = parse("s3://my-bucket").unwrap();
        assert_eq!(bare.to_string(), "s3://my-bucket");
        assert_eq!(parse("s3://b.x-1/a").unwrap().to_string(), "s3://b.x-1/a");
        for bad in [
            "s3://",
            "s3://Upper/x",
            "s3://ab",
            "s3://b-/x",
            "s3://bkt/a//b",
            "s3://bkt/../x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let e = parse("gs://bucket/x").unwrap_err();
        assert!(e.to_string().contains("unknown scheme"), "{e}");
    }

    #[test]
    fn display_round_trips() {
        for s in ["/a/b", "s3://bucket/p/q"] {
            assert_eq!(parse(s).unwrap().to_string(), s);
        }
    }
}
