//! The push-based tar walker: any bytes, pushed in chunks of any size, give members or an
//! error, never a panic; the first byte picks the chunk size so boundaries vary. Seeds in
//! corpus/tar_walk (`size-overflow-*`: a member size of 2^64-1, which overflowed when padded).
#![no_main]

use backup_core::tarwalk::TarWalker;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&size, rest)) = data.split_first() else { return };
    let chunk = usize::from(size).max(1);
    let mut walker = TarWalker::new();
    for piece in rest.chunks(chunk) {
        if walker.push(piece).is_err() {
            return;
        }
    }
    let _ = walker.finish();
});
