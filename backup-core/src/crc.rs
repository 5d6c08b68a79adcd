//! CRC-32C (Castagnoli) of bulk data: every byte of a base backup goes through it twice (the
//! manifest check of each file, the stored file's checksum), and every WAL segment stored
//! once more (the check that the stored copy reads back the same). crc-fast folds 64 bytes per
//! step with VPCLMULQDQ where the CPU has it and falls back to the SSE4.2/ARMv8 instruction:
//! 33 GB/s against the `crc32c` crate's 14 on this project's 2-core AMD EPYC machines, same
//! values. Small one-off checksums (records, configs) keep `crc32c::crc32c`.

pub mod shift;

/// A running CRC-32C.
#[derive(Clone)]
pub struct Crc32c(crc_fast::Digest);

impl Crc32c {
    /// An empty CRC (value 0).
    pub fn new() -> Crc32c {
        Crc32c(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The CRC of everything so far (more may follow).
    pub fn value(&self) -> u32 {
        self.0.finalize() as u32
    }
}

impl Default for Crc32c {
    fn default() -> Crc32c {
        Crc32c::new()
    }
}

impl std::fmt::Debug for Crc32c {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crc32c({:08x})", self.value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_crc32c_crate_over_pieces_of_every_size() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31 + i / 251) as u8).collect();
        for piece in [1, 3, 63, 64, 65, 4096, 65_537] {
            let mut c = Crc32c::new();
            for p in data.chunks(piece) {
                c.update(p);
            }
            assert_eq!(c.value(), crc32c::crc32c(&data), "pieces of {piece}");
        }
        assert_eq!(Crc32c::new().value(), 0);
        // The check value of the CRC-32C catalogue entry.
        let mut c = Crc32c::new();
        c.update(b"123456789");
        assert_eq!(c.value(), 0xe306_9283);
    }
}
