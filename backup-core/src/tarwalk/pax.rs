//! pax extended header records (`x` per file, `g` global) and GNU long names.

use super::TarError;

/// The pax keys the walker honours. For a per-file header, `Some(empty)` means "delete":
/// use the ustar field even if a global header set one.
#[derive(Debug, Default, Clone)]
pub(super) struct PaxOverrides {
    pub path: Option<Vec<u8>>,
    pub linkpath: Option<Vec<u8>>,
    pub size: Option<Option<u64>>,
    pub mtime: Option<Option<u64>>,
}

/// Parses `"<len> <key>=<value>\n"` records into `into` (later records win).
pub(super) fn parse_records(
    mut data: &[u8],
    into: &mut PaxOverrides,
    offset: u64,
) -> Result<(), TarError> {
    let bad = |why: String| TarError::BadHeader {
        offset,
        message: format!("pax extended header: {why}"),
    };
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break; // NUL padding after the last record
        }
        let space = data
            .iter()
            .take(21)
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("record without a length".into()))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("record length is not a decimal number".into()))?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad(format!(
                "record length {len} does not match its record"
            )));
        }
        let record = &data[space + 1..len - 1];
        data = &data[len..];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("record without '='".into()))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let number = |v: &[u8]| -> Result<Option<u64>, TarError> {
            if v.is_empty() {
                return Ok(None);
            }
            // mtime may carry a fraction; only whole seconds matter here.
            let whole = v.split(|&b| b == b'.').next().unwrap_or(v);
            std::str::from_utf8(whole)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| {
                    bad(format!(
                        "{} value {:?} is not a number",
                        String::from_utf8_lossy(key),
                        String::from_utf8_lossy(v)
                    ))
                })
        };
        match key {
            b"path" => into.path = Some(value.to_vec()),
            b"linkpath" => into.linkpath = Some(value.to_vec()),
            b"size" => into.size = Some(number(value)?),
            b"mtime" if value.first() == Some(&b'-') => into.mtime = Some(Some(0)),
            b"mtime" => into.mtime = Some(number(value)?),
            _ => {}
        }
    }
    Ok(())
}

/// Folds a global header's records into the running globals: an empty value deletes.
pub(super) fn merge_global(globals: &mut PaxOverrides, g: PaxOverrides) {
    fn fold<T>(slot: &mut Option<T>, v: Option<T>, empty: impl Fn(&T) -> bool) {
        if let Some(v) = v {
            *slot = if empty(&v) { None } else { Some(v) };
        }
    }
    fold(&mut globals.path, g.path, Vec::is_empty);
    fold(&mut globals.linkpath, g.linkpath, Vec::is_empty);
    fold(&mut globals.size, g.size, Option::is_none);
    fold(&mut globals.mtime, g.mtime, Option::is_none);
}

/// A GNU 'L'/'K' payload: the name, NUL-terminated.
pub(super) fn gnu_long_name(data: &[u8]) -> Vec<u8> {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    data[..end].to_vec()
}
