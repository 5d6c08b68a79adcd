//! LZ4 frame writer that compresses independent blocks on a small pool of worker threads and
//! writes them in order, so compression is not bound to one core. The output is one standard
//! LZ4 frame (`lz4 -d` reads it): 256 KiB independent blocks, an optional content checksum.
//!
//! Memory is bounded: at most `2 × workers` blocks are in flight, each with an input and an
//! output buffer of one block, and the buffers are recycled.

use std::collections::VecDeque;
use std::hash::Hasher;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use twox_hash::XxHash32;

/// Uncompressed bytes per block (the frame's block maximum size, BD = 5).
pub const BLOCK_SIZE: usize = 256 * 1024;
/// Most compression threads per file.
const MAX_WORKERS: usize = 4;
const MAGIC: u32 = 0x184D_2204;
/// FLG: version 01, independent blocks; bit 2 adds the content checksum.
const FLG_INDEPENDENT: u8 = 0b0110_0000;
const FLG_CONTENT_CHECKSUM: u8 = 0b0000_0100;
/// BD: block maximum size 256 KiB.
const BD_256K: u8 = 5 << 4;
/// Block size word flag: the block is stored uncompressed.
const UNCOMPRESSED: u32 = 0x8000_0000;

/// Room for one compressed block with its 4-byte size prefix.
fn output_capacity() -> usize {
    4 + lz4_flex::block::get_maximum_output_size(BLOCK_SIZE)
}

/// Compresses `input` into `output` (sized by [`output_capacity`]) as one framed block:
/// the size word then the data; stored raw when compression does not shrink it.
fn compress_block(input: &[u8], output: &mut [u8]) -> io::Result<usize> {
    let n = lz4_flex::block::compress_into(input, &mut output[4..]).map_err(io::Error::other)?;
    let (word, len) = if n < input.len() {
        (n as u32, n)
    } else {
        output[4..4 + input.len()].copy_from_slice(input);
        (input.len() as u32 | UNCOMPRESSED, input.len())
    };
    output[..4].copy_from_slice(&word.to_le_bytes());
    Ok(4 + len)
}

struct Job {
    input: Vec<u8>,
    output: Vec<u8>,
    reply: SyncSender<Done>,
}

struct Done {
    input: Vec<u8>,
    output: Vec<u8>,
    len: io::Result<usize>,
}

struct Pool {
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(n: usize) -> io::Result<Pool> {
        let (tx, rx) = mpsc::sync_channel::<Job>(n);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let rx = Arc::clone(&rx);
            let handle = std::thread::Builder::new()
                .name(format!("lz4-{i}"))
                .spawn(move || worker(&rx))?;
            workers.push(handle);
        }
        Ok(Pool {
            jobs: Some(tx),
            workers,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None; // workers see the channel close and exit
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let Job {
            input,
            mut output,
            reply,
        } = job;
        let len = compress_block(&input, &mut output);
        // The writer may have gone (an error elsewhere): nothing left to do with the block.
        let _ = reply.send(Done { input, output, len });
    }
}

/// The parallel LZ4 frame encoder in front of `W`.
pub struct ParLz4Encoder<W: Write> {
    inner: W,
    checksum: Option<XxHash32>,
    header_written: bool,
    /// The block being filled.
    block: Vec<u8>,
    workers: usize,
    pool: Option<Pool>,
    pending: VecDeque<Receiver<Done>>,
    /// Recycled (input, output) buffers.
    free: Vec<(Vec<u8>, Vec<u8>)>,
}

impl<W: Write> ParLz4Encoder<W> {
    /// A frame with or without the content checksum (xxHash32 of the uncompressed stream).
    pub fn new(inner: W, content_checksum: bool) -> Self {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_WORKERS);
        ParLz4Encoder {
            inner,
            checksum: content_checksum.then(|| XxHash32::with_seed(0)),
            header_written: false,
            block: Vec::with_capacity(BLOCK_SIZE),
            workers,
            pool: None,
            pending: VecDeque::new(),
            free: Vec::new(),
        }
    }

    fn write_header(&mut self) -> io::Result<()> {
        if self.header_written {
            return Ok(());
        }
        let flg = FLG_INDEPENDENT
            | if self.checksum.is_some() {
                FLG_CONTENT_CHECKSUM
            } else {
                0
            };
        let hc = (XxHash32::oneshot(0, &[flg, BD_256K]) >> 8) as u8;
        let mut h = [0u8; 7];
        h[..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4] = flg;
        h[5] = BD_256K;
        h[6] = hc;
        self.inner.write_all(&h)?;
        self.header_written = true;
        Ok(())
    }

    fn buffers(&mut self) -> (Vec<u8>, Vec<u8>) {
        self.free
            .pop()
            .unwrap_or_else(|| (Vec::with_capacity(BLOCK_SIZE), vec![0u8; output_capacity()]))
    }

    /// Hands the filled block to the pool (or compresses it here when it is the only one).
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        if self.pool.is_none() && last {
            // A file of one block: no threads for it.
            let (input, mut output) = self.buffers();
            let len = compress_block(&self.block, &mut output)?;
            self.write_block(&output[..len])?;
            self.block.clear();
            self.free.push((input, output));
            return Ok(());
        }
        if self.pool.is_none() {
            self.pool = Some(Pool::start(self.workers)?);
        }
        let (mut next, output) = self.buffers();
        next.clear();
        let input = std::mem::replace(&mut self.block, next);
        let (reply, rx) = mpsc::sync_channel(1);
        let jobs = self
            .pool
            .as_ref()
            .and_then(|p| p.jobs.as_ref())
            .expect("the pool is running");
        jobs.send(Job {
            input,
            output,
            reply,
        })
        .map_err(|_| io::Error::other("an lz4 worker thread stopped"))?;
        self.pending.push_back(rx);
        // Write what is done; wait only when too many blocks are in flight.
        while let Some(front) = self.pending.front() {
            let done = if self.pending.len() >= 2 * self.workers {
                front.recv().ok()
            } else {
                match front.try_recv() {
                    Ok(d) => Some(d),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => None,
                }
            };
            self.complete(done)?;
        }
        Ok(())
    }

    fn complete(&mut self, done: Option<Done>) -> io::Result<()> {
        self.pending.pop_front();
        let done = done.ok_or_else(|| io::Error::other("an lz4 worker thread stopped"))?;
        let len = done.len?;
        self.write_block(&done.output[..len])?;
        self.free.push((done.input, done.output));
        Ok(())
    }

    fn write_block(&mut self, framed: &[u8]) -> io::Result<()> {
        self.write_header()?;
        self.inner.write_all(framed)
    }

    fn drain(&mut self) -> io::Result<()> {
        while let Some(front) = self.pending.front() {
            let done = front.recv().ok();
            self.complete(done)?;
        }
        Ok(())
    }

    /// Writes the remaining blocks, the end mark and the checksum; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        self.drain()?;
        self.write_header()?;
        let mut end = [0u8; 8];
        let len = match &self.checksum {
            Some(h) => {
                end[4..].copy_from_slice(&h.finish_32().to_le_bytes());
                8
            }
            None => 4,
        };
        self.inner.write_all(&end[..len])?;
        self.pool = None;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParLz4Encoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let take = (BLOCK_SIZE - self.block.len()).min(data.len());
        self.block.extend_from_slice(&data[..take]);
        if let Some(h) = self.checksum.as_mut() {
            h.write(&data[..take]);
        }
        if self.block.len() == BLOCK_SIZE {
            self.dispatch(false)?;
        }
        Ok(take)
    }

    /// Ends the current block early and writes every block so far.
    fn flush(&mut self) -> io::Result<()> {
        self.dispatch(false)?;
        self.drain()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        // Mixed: compressible runs and pseudo-random bytes.
        let mut x: u32 = 1;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if (i / 100_000) % 2 == 0 {
                    (i % 7) as u8
                } else {
                    (x >> 16) as u8
                }
            })
            .collect()
    }

    fn decode(frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lz4_flex::frame::FrameDecoder::new(frame)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn frames_decode_with_lz4_flex_at_every_size() {
        for n in [
            0,
            1,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            3 * BLOCK_SIZE + 17,
            40 * BLOCK_SIZE,
        ] {
            let data = sample(n);
            for checksum in [false, true] {
                let mut e = ParLz4Encoder::new(Vec::new(), checksum);
                for c in data.chunks(10_000) {
                    e.write_all(c).unwrap();
                }
                let frame = e.finish().unwrap();
                assert!(decode(&frame) == data, "n={n} checksum={checksum}");
            }
        }
    }

    #[test]
    fn flush_mid_stream_keeps_one_frame() {
        let data = sample(BLOCK_SIZE * 2 + 5);
        let mut e = ParLz4Encoder::new(Vec::new(), true);
        e.write_all(&data[..1000]).unwrap();
        e.flush().unwrap();
        e.write_all(&data[1000..]).unwrap();
        assert!(decode(&e.finish().unwrap()) == data);
    }

    #[test]
    fn content_checksum_is_checked_by_the_decoder() {
        let data = sample(BLOCK_SIZE + 3);
        let mut e = ParLz4Encoder::new(Vec::new(), true);
        e.write_all(&data).unwrap();
        let mut frame = e.finish().unwrap();
        let last = frame.len() - 1;
        frame[last] ^= 1;
        let mut out = Vec::new();
        assert!(lz4_flex::frame::FrameDecoder::new(&frame[..])
            .read_to_end(&mut out)
            .is_err());
    }
}
