//! Small `std::io` helpers shared by the readers of our file formats.

use std::io::{self, Read};

/// Reads until `buf` is full or the stream ends, retrying on EINTR; returns the count.
/// Unlike `read_exact`, a short count at EOF is a result, not an error, so callers can
/// name what was truncated.
pub(crate) fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
