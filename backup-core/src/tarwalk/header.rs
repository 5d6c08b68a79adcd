//! One 512-byte ustar header: fields, numbers (octal and GNU base-256) and the checksum.

use super::TarError;

pub(super) const BLOCK: usize = 512;

/// The fields of a header, before pax or GNU long-name overrides.
pub(super) struct Header {
    pub name: Vec<u8>,
    pub mode: u32,
    pub size: u64,
    pub mtime: u64,
    pub typeflag: u8,
    pub linkname: Vec<u8>,
}

pub(super) fn is_zero_block(block: &[u8]) -> bool {
    block.iter().all(|&b| b == 0)
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// An octal number, space/NUL padded, or (GNU) base-256 when the high bit is set.
pub(super) fn number(field: &[u8], what: &str, offset: u64) -> Result<u64, TarError> {
    let bad = |why: &str| TarError::BadHeader {
        offset,
        message: format!("{what} field {:?}: {why}", String::from_utf8_lossy(field)),
    };
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return Err(bad("negative base-256 number"));
        }
        let mut v = u64::from(field[0] & 0x3F);
        for &b in &field[1..] {
            if v >> 56 != 0 {
                return Err(bad("base-256 number too large"));
            }
            v = (v << 8) | u64::from(b);
        }
        return Ok(v);
    }
    let s = field
        .iter()
        .position(|&b| b != b' ')
        .map_or(&field[..0], |i| &field[i..]);
    let end = s
        .iter()
        .position(|&b| b == 0 || b == b' ')
        .unwrap_or(s.len());
    if s[end..].iter().any(|&b| b != 0 && b != b' ') {
        return Err(bad("not an octal number"));
    }
    let mut v: u64 = 0;
    for &b in &s[..end] {
        if !(b'0'..=b'7').contains(&b) {
            return Err(bad("not an octal number"));
        }
        v = v
            .checked_mul(8)
            .map(|v| v + u64::from(b - b'0'))
            .ok_or_else(|| bad("octal number too large"))?;
    }
    Ok(v)
}

/// Parses and checks a header block that is not all zeros.
pub(super) fn parse(block: &[u8; BLOCK], offset: u64) -> Result<Header, TarError> {
    let stored = number(&block[148..156], "checksum", offset)?;
    let unsigned: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| u64::from(if (148..156).contains(&i) { b' ' } else { b }))
        .sum();
    // Some historical tars summed signed chars; accept either as GNU tar does.
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            i64::from(if (148..156).contains(&i) {
                b' ' as i8
            } else {
                b as i8
            })
        })
        .sum();
    if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
        return Err(TarError::HeaderChecksum {
            offset,
            stored,
            computed: unsigned,
        });
    }
    let magic = &block[257..265];
    let posix = &magic[..6] == b"ustar\0";
    if !posix && magic != b"ustar  \0" {
        return Err(TarError::BadHeader {
            offset,
            message: format!(
                "not a ustar header (magic {:?}); only POSIX ustar/pax and GNU archives are read",
                String::from_utf8_lossy(magic)
            ),
        });
    }
    let mut name = Vec::new();
    // GNU uses the prefix area for other fields.
    let prefix = if posix { cstr(&block[345..500]) } else { &[] };
    if !prefix.is_empty() {
        name.extend_from_slice(prefix);
        name.push(b'/');
    }
    name.extend_from_slice(cstr(&block[..100]));
    let mode = number(&block[100..108], "mode", offset)?;
    Ok(Header {
        name,
        mode: u32::try_from(mode & 0o7777_7777).unwrap_or(0),
        size: number(&block[124..136], "size", offset)?,
        mtime: number(&block[136..148], "mtime", offset)?,
        typeflag: block[156],
        linkname: cstr(&block[157..257]).to_vec(),
    })
}
