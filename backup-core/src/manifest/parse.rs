//! The JSON side of manifest parsing: a serde visitor that enforces the rules of PostgreSQL's
//! src/common/parse_manifest.c while it streams through the entries (no `Value` tree), so
//! serde_json can attach the line and column of whatever entry broke a rule.

use std::collections::HashMap;
use std::fmt;

use pgwire_repl::{Lsn, TimelineId};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::checksum::{ChecksumAlgorithm, FileChecksum};
use super::path::BackupPath;
use super::{ManifestFile, WalRange};

pub(super) const VERSION_KEY: &str = "PostgreSQL-Backup-Manifest-Version";

/// Everything the JSON holds; the Manifest-Checksum is checked by the caller.
pub(super) struct Parsed {
    pub version: u32,
    pub system_identifier: Option<u64>,
    pub files: Vec<ManifestFile>,
    pub index: HashMap<BackupPath, usize>,
    pub wal_ranges: Vec<WalRange>,
    pub manifest_checksum: String,
}

pub(super) fn parse_json(bytes: &[u8]) -> Result<Parsed, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = de.deserialize_map(TopVisitor)?;
    de.end()?;
    Ok(parsed)
}

fn err<E: de::Error>(msg: impl fmt::Display) -> E {
    E::custom(msg)
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Parsed;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a backup manifest (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        match map.next_key::<String>()? {
            Some(k) if k == VERSION_KEY => {}
            Some(k) => {
                return Err(err(format_args!(
                    "expected {VERSION_KEY:?} as the first key, found {k:?}"
                )))
            }
            None => return Err(err(format_args!("empty object: expected {VERSION_KEY:?}"))),
        }
        let version = map.next_value_seed(IntSeed(VERSION_KEY))?;
        if version != 1 && version != 2 {
            return Err(err(format_args!(
                "unexpected manifest version {version}: only versions 1 (PostgreSQL 13-16) \
                 and 2 (17+) exist"
            )));
        }
        let mut parsed = Parsed {
            version: version as u32,
            system_identifier: None,
            files: Vec::new(),
            index: HashMap::new(),
            wal_ranges: Vec::new(),
            manifest_checksum: String::new(),
        };
        let (mut saw_sysid, mut saw_files, mut saw_ranges, mut saw_checksum) =
            (false, false, false, false);
        while let Some(key) = map.next_key::<String>()? {
            if saw_checksum {
                return Err(err(format_args!(
                    "unexpected key {key:?} after \"Manifest-Checksum\", which must be last"
                )));
            }
            let seen = match key.as_str() {
                "System-Identifier" => &mut saw_sysid,
                "Files" => &mut saw_files,
                "WAL-Ranges" => &mut saw_ranges,
                "Manifest-Checksum" => &mut saw_checksum,
                _ => return Err(err(format_args!("unknown top-level key {key:?}"))),
            };
            if std::mem::replace(seen, true) {
                return Err(err(format_args!("duplicate top-level key {key:?}")));
            }
            match key.as_str() {
                "System-Identifier" => {
                    if parsed.version < 2 {
                        return Err(err("\"System-Identifier\" in a version 1 manifest"));
                    }
                    parsed.system_identifier =
                        Some(map.next_value_seed(IntSeed("System-Identifier"))?);
                }
                "Files" => map.next_value_seed(FilesSeed {
                    files: &mut parsed.files,
                    index: &mut parsed.index,
                })?,
                "WAL-Ranges" => parsed.wal_ranges = map.next_value_seed(RangesSeed)?,
                _ => parsed.manifest_checksum = map.next_value::<String>()?,
            }
        }
        if !saw_checksum {
            return Err(err(
                "missing \"Manifest-Checksum\" (the manifest is incomplete)",
            ));
        }
        Ok(parsed)
    }
}

/// A non-negative integer field. PostgreSQL's parser reads every scalar as its token text,
/// so a decimal string is accepted as well as a number.
struct IntSeed(&'static str);

impl<'de> DeserializeSeed<'de> for IntSeed {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IntSeed {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a non-negative integer for {:?}", self.0)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = v.parse() {
                return Ok(n);
            }
        }
        Err(err(format_args!("{:?} is not an integer: {v:?}", self.0)))
    }
}

struct FilesSeed<'a> {
    files: &'a mut Vec<ManifestFile>,
    index: &'a mut HashMap<BackupPath, usize>,
}

impl<'de> DeserializeSeed<'de> for FilesSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FilesSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of file objects for \"Files\"")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(file) = seq.next_element_seed(FileSeed { index: self.index })? {
            self.index.insert(file.path.clone(), self.files.len());
            self.files.push(file);
        }
        Ok(())
    }
}

/// Checks duplicates itself so that the error points at the duplicate's line.
struct FileSeed<'a> {
    index: &'a HashMap<BackupPath, usize>,
}

impl<'de> DeserializeSeed<'de> for FileSeed<'_> {
    type Value = ManifestFile;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ManifestFile, D::Error> {
        d.deserialize_map(self)
    }
}

fn set_once<T, E: de::Error>(slot: &mut Option<T>, v: T, what: &str, key: &str) -> Result<(), E> {
    if slot.replace(v).is_some() {
        return Err(err(format_args!("duplicate {what} field {key:?}")));
    }
    Ok(())
}

impl<'de> Visitor<'de> for FileSeed<'_> {
    type Value = ManifestFile;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a file object in \"Files\"")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ManifestFile, A::Error> {
        let (mut path, mut encoded, mut size) = (None, None, None);
        let (mut modified, mut algorithm, mut checksum) = (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "Path" => set_once(&mut path, map.next_value::<String>()?, "file", &key)?,
                "Encoded-Path" => {
                    set_once(&mut encoded, map.next_value::<String>()?, "file", &key)?
                }
                "Size" => set_once(
                    &mut size,
                    map.next_value_seed(IntSeed("Size"))?,
                    "file",
                    &key,
                )?,
                "Last-Modified" => {
                    set_once(&mut modified, map.next_value::<String>()?, "file", &key)?
                }
                "Checksum-Algorithm" => {
                    set_once(&mut algorithm, map.next_value::<String>()?, "file", &key)?
                }
                "Checksum" => set_once(&mut checksum, map.next_value::<String>()?, "file", &key)?,
                _ => return Err(err(format_args!("unexpected file field {key:?}"))),
            }
        }
        let path = match (path, encoded) {
            (None, None) => return Err(err("file entry without \"Path\" or \"Encoded-Path\"")),
            (Some(_), Some(_)) => {
                return Err(err("file entry with both \"Path\" and \"Encoded-Path\""))
            }
            (Some(p), None) => BackupPath::new(p),
            (None, Some(hex_path)) => match hex::decode(&hex_path) {
                Ok(raw) if !raw.is_empty() => BackupPath::new(raw),
                _ => {
                    return Err(err(format_args!(
                        "could not decode \"Encoded-Path\" {hex_path:?}: expected hexadecimal"
                    )))
                }
            },
        };
        if path.as_bytes().is_empty() {
            return Err(err("file entry with an empty path"));
        }
        if self.index.contains_key(&path) {
            return Err(err(format_args!(
                "duplicate path name in backup manifest: {path}"
            )));
        }
        let Some(size) = size else {
            return Err(err(format_args!("file {path}: missing \"Size\"")));
        };
        let algorithm = match algorithm {
            None if checksum.is_some() => {
                return Err(err(format_args!(
                    "file {path}: \"Checksum\" without \"Checksum-Algorithm\""
                )))
            }
            None => None,
            Some(a) => ChecksumAlgorithm::parse(&a)
                .map_err(|e| err::<A::Error>(format_args!("file {path}: {e}")))?,
        };
        let checksum = match (algorithm, checksum) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(err(format_args!(
                    "file {path}: \"Checksum\" with \"Checksum-Algorithm\" NONE"
                )))
            }
            (Some(a), None) => {
                return Err(err(format_args!(
                    "file {path}: \"Checksum-Algorithm\" {a} without \"Checksum\""
                )))
            }
            (Some(a), Some(hex_sum)) => hex::decode(&hex_sum)
                .ok()
                .and_then(|raw| FileChecksum::new(a, raw))
                .ok_or_else(|| {
                    err::<A::Error>(format_args!(
                        "file {path}: invalid {a} checksum {hex_sum:?}: expected {} hex digits",
                        2 * a.digest_len()
                    ))
                })
                .map(Some)?,
        };
        Ok(ManifestFile {
            path,
            size,
            checksum,
            last_modified: modified,
        })
    }
}

struct RangesSeed;

impl<'de> DeserializeSeed<'de> for RangesSeed {
    type Value = Vec<WalRange>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<WalRange>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RangesSeed {
    type Value = Vec<WalRange>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of WAL range objects for \"WAL-Ranges\"")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<WalRange>, A::Error> {
        let mut ranges = Vec::new();
        while let Some(r) = seq.next_element_seed(RangeSeed)? {
            ranges.push(r);
        }
        Ok(ranges)
    }
}

struct RangeSeed;

impl<'de> DeserializeSeed<'de> for RangeSeed {
    type Value = WalRange;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<WalRange, D::Error> {
        d.deserialize_map(self)
    }
}

fn lsn<E: de::Error>(key: &str, s: Option<String>) -> Result<Lsn, E> {
    let s = s.ok_or_else(|| err(format_args!("WAL range: missing {key:?}")))?;
    s.parse().map_err(|_| {
        err(format_args!(
            "WAL range: could not parse {key:?} {s:?} as an LSN"
        ))
    })
}

impl<'de> Visitor<'de> for RangeSeed {
    type Value = WalRange;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a WAL range object in \"WAL-Ranges\"")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WalRange, A::Error> {
        let (mut tli, mut start, mut end) = (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "Timeline" => set_once(
                    &mut tli,
                    map.next_value_seed(IntSeed("Timeline"))?,
                    "WAL range",
                    &key,
                )?,
                "Start-LSN" => set_once(&mut start, map.next_value()?, "WAL range", &key)?,
                "End-LSN" => set_once(&mut end, map.next_value()?, "WAL range", &key)?,
                _ => return Err(err(format_args!("unexpected WAL range field {key:?}"))),
            }
        }
        let tli = tli.ok_or_else(|| err::<A::Error>("WAL range: missing \"Timeline\""))?;
        let timeline = match u32::try_from(tli) {
            Ok(t) if t != 0 => TimelineId(t),
            _ => return Err(err(format_args!("WAL range: invalid \"Timeline\" {tli}"))),
        };
        let start = lsn("Start-LSN", start)?;
        let end = lsn("End-LSN", end)?;
        if end < start {
            return Err(err(format_args!(
                "WAL range of timeline {timeline}: End-LSN {end} is before Start-LSN {start}"
            )));
        }
        Ok(WalRange {
            timeline,
            start,
            end,
        })
    }
}
