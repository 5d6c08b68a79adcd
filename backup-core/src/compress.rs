//! Streaming compression in standard frame formats (lz4 frame, zstd, gzip), so an unencrypted
//! file opens with `lz4 -d`, `zstd -d` or `gzip -d`. Encoders and decoders hold bounded buffers.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::str::FromStr;

mod lz4par;
pub use lz4par::ParLz4Encoder;

/// Highest zstd level accepted. Level 12 needs ~48 MiB of encoder state and level 15 over
/// 64 MiB (measured streaming), which would break the 64 MiB peak-RSS promise.
pub const MAX_ZSTD_LEVEL: i32 = 11;
/// zstd level when none is given.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// gzip level when none is given.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;
/// Largest zstd window the decoder accepts (2^23 = 8 MiB; our levels use at most 2^22).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// A compression choice (`--compression lz4|zstd[:LEVEL]|gzip[:LEVEL]|none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Stored as written.
    None,
    /// LZ4 frame format (256 KiB independent blocks; content checksum when unencrypted).
    #[default]
    Lz4,
    /// zstd frame with checksum, at a level 1..=MAX_ZSTD_LEVEL.
    Zstd(i32),
    /// gzip (RFC 1952) at a level 1..=9.
    Gzip(u32),
}

impl Compression {
    /// The family id stored in encrypted file headers (levels are not needed to decode).
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            Compression::Zstd(_) => 2,
            Compression::Gzip(_) => 3,
        }
    }

    /// The family for a header id, with its default level.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(Compression::None),
            1 => Some(Compression::Lz4),
            2 => Some(Compression::Zstd(DEFAULT_ZSTD_LEVEL)),
            3 => Some(Compression::Gzip(DEFAULT_GZIP_LEVEL)),
            _ => None,
        }
    }

    /// The family name (`lz4`, `zstd`, `gzip`, `none`).
    pub fn family(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd(_) => "zstd",
            Compression::Gzip(_) => "gzip",
        }
    }

    /// Conventional file-name suffix (`.lz4`, `.zst`, `.gz`, empty).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Lz4 => ".lz4",
            Compression::Zstd(_) => ".zst",
            Compression::Gzip(_) => ".gz",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None | Compression::Lz4 => f.write_str(self.family()),
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
            Compression::Gzip(l) => write!(f, "gzip:{l}"),
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (s, None),
        };
        let parse_level = |lo: i64, hi: i64| -> Result<Option<i64>, String> {
            level
                .map(|l| {
                    l.parse::<i64>()
                        .ok()
                        .filter(|v| (lo..=hi).contains(v))
                        .ok_or_else(|| {
                            format!("{name} level {l:?} must be an integer in {lo}..={hi}")
                        })
                })
                .transpose()
        };
        match name {
            "none" | "lz4" if level.is_some() => Err(format!("{name} takes no level (got {s:?})")),
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd(
                parse_level(1, MAX_ZSTD_LEVEL.into())?.map_or(DEFAULT_ZSTD_LEVEL, |v| v as i32),
            )),
            "gzip" => Ok(Compression::Gzip(
                parse_level(1, 9)?.map_or(DEFAULT_GZIP_LEVEL, |v| v as u32),
            )),
            _ => Err(format!(
                "unknown compression {s:?}; expected lz4, zstd[:LEVEL], gzip[:LEVEL] or none"
            )),
        }
    }
}

impl Serialize for Compression {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A streaming compressor in front of `W`.
pub enum Encoder<W: Write> {
    /// Pass-through.
    None(W),
    /// LZ4 frame, blocks compressed in parallel.
    Lz4(ParLz4Encoder<W>),
    /// zstd frame.
    Zstd(zstd::stream::write::Encoder<'static, W>),
    /// gzip member.
    Gzip(flate2::write::GzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// Starts a stream with the given compression, with the lz4 content checksum (as the lz4
    /// CLI writes it: a plain file then verifies itself).
    pub fn new(inner: W, compression: Compression) -> io::Result<Self> {
        Self::with_lz4_checksum(inner, compression, true)
    }

    /// Like [`Encoder::new`]; `lz4_checksum` false leaves the lz4 content checksum out, for
    /// streams that are then sealed by the AEAD, which already authenticates every byte.
    pub fn with_lz4_checksum(
        inner: W,
        compression: Compression,
        lz4_checksum: bool,
    ) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::None(inner),
            Compression::Lz4 => Encoder::Lz4(ParLz4Encoder::new(inner, lz4_checksum)),
            Compression::Zstd(level) => {
                let mut e = zstd::stream::write::Encoder::new(inner, level)?;
                e.include_checksum(true)?;
                Encoder::Zstd(e)
            }
            Compression::Gzip(level) => Encoder::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(level),
            )),
        })
    }

    /// Ends the stream (writes the frame trailer) and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Lz4(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Lz4(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Lz4(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
        }
    }
}

/// A streaming decompressor over `R`.
pub enum Decoder<R: Read> {
    /// Pass-through.
    None(R),
    /// LZ4 frame.
    Lz4(lz4_flex::frame::FrameDecoder<R>),
    /// zstd frame.
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
    /// gzip member.
    Gzip(flate2::read::GzDecoder<R>),
}

impl<R: Read> Decoder<R> {
    /// Starts decoding a stream of the given compression family.
    pub fn new(inner: R, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Decoder::None(inner),
            Compression::Lz4 => Decoder::Lz4(lz4_flex::frame::FrameDecoder::new(inner)),
            Compression::Zstd(_) => {
                let mut d = zstd::stream::read::Decoder::new(inner)?;
                // Bounds memory on a hostile frame asking for a huge window.
                d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                Decoder::Zstd(d)
            }
            Compression::Gzip(_) => Decoder::Gzip(flate2::read::GzDecoder::new(inner)),
        })
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::None(r) => r.read(buf),
            Decoder::Lz4(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
            Decoder::Gzip(d) => d.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        assert_eq!("lz4".parse::<Compression>().unwrap(), Compression::Lz4);
        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd(3));
        assert_eq!(
            "zstd:9".parse::<Compression>().unwrap(),
            Compression::Zstd(9)
        );
        assert_eq!(
            "gzip:1".parse::<Compression>().unwrap(),
            Compression::Gzip(1)
        );
        assert_eq!(Compression::Gzip(6).to_string(), "gzip:6");
        for bad in [
            "zstd:19", "zstd:0", "gzip:10", "gzip:x", "lz4:1", "brotli", "none:3",
        ] {
            let e = bad.parse::<Compression>().unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        assert!("zstd:19"
            .parse::<Compression>()
            .unwrap_err()
            .contains("1..=11"));
    }

    #[test]
    fn round_trip_each_family() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [
            Compression::None,
            Compression::Lz4,
            Compression::Zstd(1),
            Compression::Zstd(MAX_ZSTD_LEVEL),
            Compression::Gzip(9),
        ] {
            let mut e = Encoder::new(Vec::new(), c).unwrap();
            e.write_all(&data).unwrap();
            let stored = e.finish().unwrap();
            let mut out = Vec::new();
            Decoder::new(&stored[..], c)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert!(out == data, "{c}");
        }
    }
}
