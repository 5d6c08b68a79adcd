//! Synthetic WAL segments: valid page headers and no records (protocol.md §6).
//!
//! Every page carries a header; the first page's is the long form. Headers are in NATIVE byte
//! order, as the server writes them. After each header the page is zero, so a WAL reader sees
//! `xl_tot_len == 0`, i.e. the end of WAL, right after the first page header.

/// `XLP_LONG_HEADER`: set in the first page's `xlp_info`.
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// Size of a short page header (`SizeOfXLogShortPHD`, MAXALIGNed).
pub const SHORT_HEADER_LEN: usize = 24;
/// Size of a long page header (`SizeOfXLogLongPHD`, MAXALIGNed).
pub const LONG_HEADER_LEN: usize = 40;
/// The default WAL segment size.
pub const DEFAULT_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;
/// The default WAL block size.
pub const DEFAULT_BLOCK_SIZE: u32 = 8192;

/// `XLOG_PAGE_MAGIC` for a server major version (12–18), or `None` for others.
pub fn page_magic(major: u32) -> Option<u16> {
    Some(match major {
        12 => 0xD101,
        13 => 0xD106,
        14 => 0xD10D,
        15 => 0xD110,
        16 => 0xD113,
        17 => 0xD116,
        18 => 0xD118,
        _ => return None,
    })
}

/// The file name of segment `segno` on timeline `tli`: `%08X%08X%08X` of (tli, segno / per_id,
/// segno % per_id) with per_id = 2³² / seg_size.
pub fn segment_name(tli: u32, segno: u64, seg_size: u32) -> String {
    let per_id = 0x1_0000_0000u64 / u64::from(seg_size);
    format!("{tli:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// What to put in a synthetic segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalSegmentSpec {
    /// `xlp_magic` (see [`page_magic`]).
    pub magic: u16,
    /// `xlp_sysid` in the long header: the IDENTIFY_SYSTEM systemid.
    pub sysid: u64,
    /// `xlp_tli` of every page.
    pub tli: u32,
    /// Segment number; page k's `xlp_pageaddr` is `segno * seg_size + k * block_size`.
    pub segno: u64,
    /// Segment size (a power of two from 1 MiB to 1 GiB).
    pub seg_size: u32,
    /// WAL block size (`XLOG_BLCKSZ`).
    pub block_size: u32,
    /// Pages that get a header; the rest stay zero (magic 0 marks the end of valid data, as in
    /// a partially written or zero-padded segment). `None` = every page.
    pub valid_pages: Option<usize>,
}

impl WalSegmentSpec {
    /// A 16 MiB segment with 8 kB pages, every page valid, for server major `major`.
    /// Panics for a major version outside 12–18.
    pub fn new(major: u32, sysid: u64, tli: u32, segno: u64) -> Self {
        let magic = page_magic(major)
            .unwrap_or_else(|| panic!("no XLOG_PAGE_MAGIC known for major {major}"));
        WalSegmentSpec {
            magic,
            sysid,
            tli,
            segno,
            seg_size: DEFAULT_SEGMENT_SIZE,
            block_size: DEFAULT_BLOCK_SIZE,
            valid_pages: None,
        }
    }

    /// The start LSN of the segment.
    pub fn start_lsn(&self) -> u64 {
        self.segno * u64::from(self.seg_size)
    }

    /// The segment's file name.
    pub fn file_name(&self) -> String {
        segment_name(self.tli, self.segno, self.seg_size)
    }

    /// Builds the segment bytes (`seg_size` bytes).
    pub fn build(&self) -> Vec<u8> {
        assert!(
            self.seg_size.is_power_of_two() && (1 << 20..=1 << 30).contains(&self.seg_size),
            "segment size {} is not a power of two between 1 MiB and 1 GiB",
            self.seg_size
        );
        // Both are powers of two, so a block size no larger than the segment divides it.
        assert!(
            self.block_size.is_power_of_two() && (1024..=65536).contains(&self.block_size),
            "block size {} is not a power of two between 1 kB and 64 kB",
            self.block_size
        );
        let seg_size = self.seg_size as usize;
        let blcksz = self.block_size as usize;
        let pages = seg_size / blcksz;
        let valid = self.valid_pages.unwrap_or(pages).min(pages);
        let mut out = vec![0u8; seg_size];
        for k in 0..valid {
            let page = &mut out[k * blcksz..(k + 1) * blcksz];
            let info = if k == 0 { XLP_LONG_HEADER } else { 0 };
            let pageaddr = self.start_lsn() + (k * blcksz) as u64;
            page[0..2].copy_from_slice(&self.magic.to_ne_bytes());
            page[2..4].copy_from_slice(&info.to_ne_bytes());
            page[4..8].copy_from_slice(&self.tli.to_ne_bytes());
            page[8..16].copy_from_slice(&pageaddr.to_ne_bytes());
            // xlp_rem_len 0 (no continuation record) and padding stay zero.
            if k == 0 {
                page[24..32].copy_from_slice(&self.sysid.to_ne_bytes());
                page[32..36].copy_from_slice(&self.seg_size.to_ne_bytes());
                page[36..40].copy_from_slice(&self.block_size.to_ne_bytes());
            }
        }
        out
    }
}

/// A 16 MiB segment with every page header valid: shorthand for
/// `WalSegmentSpec::new(major, sysid, tli, segno).build()`.
pub fn wal_segment(major: u32, sysid: u64, tli: u32, segno: u64) -> Vec<u8> {
    WalSegmentSpec::new(major, sysid, tli, segno).build()
}
