//! CRC-32C of a file assembled out of order, without reading it back: the CRC of a
//! concatenation from the CRCs of its parts (zlib's `crc32_combine`), with the "append n zero
//! bytes" operator precomputed for every power of two so that a shift by any length costs at
//! most 64 small matrix products instead of `log n` matrix squarings.
//!
//! For the standard CRC-32C (initial value and final XOR all ones):
//! `crc(A ‖ B) = shift(crc(A), |B|) ⊕ crc(B)`, where `shift` is linear over GF(2). So
//! replacing a block `X` by `Y` (same length) with `T` bytes after it changes the file's CRC by
//! `shift(crc(X) ⊕ crc(Y), T)`.

/// The reflected CRC-32C (Castagnoli) polynomial.
const POLY: u32 = 0x82F6_3B78;

/// A 32×32 matrix over GF(2): column `i` is the image of bit `i`.
type Matrix = [u32; 32];

fn times(m: &Matrix, mut v: u32) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while v != 0 {
        if v & 1 != 0 {
            sum ^= m[i];
        }
        v >>= 1;
        i += 1;
    }
    sum
}

fn square(m: &Matrix) -> Matrix {
    let mut out = [0u32; 32];
    for (o, &col) in out.iter_mut().zip(m.iter()) {
        *o = times(m, col);
    }
    out
}

/// Precomputed operators; build once and share.
#[derive(Clone)]
pub struct CrcShift {
    /// `pow2[j]`: the operator that appends 2^j zero bytes.
    pow2: Vec<Matrix>,
    /// `zeros[j]`: the CRC-32C of 2^j zero bytes.
    zeros: Vec<u32>,
}

impl std::fmt::Debug for CrcShift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrcShift")
    }
}

impl Default for CrcShift {
    fn default() -> Self {
        CrcShift::new()
    }
}

impl CrcShift {
    pub fn new() -> CrcShift {
        // One zero bit, then three squarings: one zero byte.
        let mut bit = [0u32; 32];
        bit[0] = POLY;
        for (n, b) in bit.iter_mut().enumerate().skip(1) {
            *b = 1 << (n - 1);
        }
        let mut byte = square(&square(&square(&bit)));
        let mut pow2 = Vec::with_capacity(64);
        for _ in 0..64 {
            pow2.push(byte);
            byte = square(&byte);
        }
        let mut zeros = Vec::with_capacity(64);
        let mut z = crc32c::crc32c(&[0]);
        for m in &pow2 {
            zeros.push(z);
            // crc(0^(2n)) = shift(crc(0^n), n) ⊕ crc(0^n)
            z = times(m, z) ^ z;
        }
        CrcShift { pow2, zeros }
    }

    /// `crc` as if `n` more bytes (of CRC zero, i.e. the linear part only) followed.
    pub fn shift(&self, crc: u32, n: u64) -> u32 {
        let mut v = crc;
        let mut n = n;
        let mut j = 0;
        while n != 0 {
            if n & 1 != 0 {
                v = times(&self.pow2[j], v);
            }
            n >>= 1;
            j += 1;
        }
        v
    }

    /// `crc(A ‖ B)` from `crc(A)`, `crc(B)` and `|B|`.
    pub fn combine(&self, a: u32, b: u32, len_b: u64) -> u32 {
        self.shift(a, len_b) ^ b
    }

    /// The CRC-32C of `n` zero bytes.
    pub fn zeros(&self, n: u64) -> u32 {
        let mut crc = 0;
        let mut left = n;
        let mut j = 0;
        while left != 0 {
            if left & 1 != 0 {
                crc = self.combine(crc, self.zeros[j], 1 << j);
            }
            left >>= 1;
            j += 1;
        }
        crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed) as u8)
            .collect()
    }

    #[test]
    fn combine_matches_the_crc_of_the_concatenation() {
        let s = CrcShift::new();
        for (a, b) in [
            (0, 0),
            (0, 5),
            (5, 0),
            (1, 1),
            (100, 8192),
            (8192, 12345),
            (70_000, 3),
        ] {
            let x = data(a, 1);
            let y = data(b, 2);
            let whole: Vec<u8> = x.iter().chain(&y).copied().collect();
            assert_eq!(
                s.combine(crc32c::crc32c(&x), crc32c::crc32c(&y), b as u64),
                crc32c::crc32c(&whole),
                "{a} + {b}"
            );
            assert_eq!(
                crc32c::crc32c_combine(crc32c::crc32c(&x), crc32c::crc32c(&y), b),
                crc32c::crc32c(&whole)
            );
        }
    }

    #[test]
    fn zeros_match_a_crc_of_zero_bytes() {
        let s = CrcShift::new();
        for n in [0usize, 1, 2, 3, 7, 8192, 8193, 100_000, 1 << 20] {
            assert_eq!(s.zeros(n as u64), crc32c::crc32c(&vec![0u8; n]), "{n}");
        }
    }

    #[test]
    fn replacing_a_block_changes_the_crc_by_the_shifted_difference() {
        let s = CrcShift::new();
        let mut file = data(4 * 8192, 3);
        let before = crc32c::crc32c(&file);
        let old = file[8192..16384].to_vec();
        let new = data(8192, 9);
        file[8192..16384].copy_from_slice(&new);
        let after = before ^ s.shift(crc32c::crc32c(&old) ^ crc32c::crc32c(&new), 2 * 8192);
        assert_eq!(after, crc32c::crc32c(&file));
    }
}
