//! Fsyncs what the extractor wrote on a few helper threads, behind the writer.
//!
//! One `fsync` per file, one after the other on the writing thread, made a restore wait for
//! the disk once per file (0.9 s of 984 files / 104 MiB). Handed to helpers, the waits overlap
//! with unpacking and with each other, and the filesystem can commit many files in one journal
//! transaction. Nothing is weaker: [`Syncer::finish`] returns only when every file and
//! directory handed over is durable, or with the first error. Memory and open descriptors are
//! bounded by the channel (`QUEUED` files waiting, one per helper being synced).

use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::ExtractError;

/// Helper threads. An fsync mostly waits for the disk, so more helpers than cores is fine.
const HELPERS: usize = 4;
/// Files written but not yet picked up by a helper (each keeps its descriptor open).
const QUEUED: usize = 64;

enum Job {
    /// A file written through this descriptor.
    File(File, PathBuf),
    /// A directory whose entries must become durable.
    Dir(PathBuf),
}

type Shared = Arc<Mutex<Option<ExtractError>>>;

/// The helpers and the first error any of them met. Threads start with the first job.
#[derive(Default)]
pub(crate) struct Syncer {
    tx: Option<SyncSender<Job>>,
    helpers: Vec<JoinHandle<()>>,
    error: Shared,
}

impl Syncer {
    /// Queues `file` (written at `path`) for fsync; waits while the queue is full. Fails with
    /// an earlier fsync error, so a bad disk stops the restore early.
    pub fn file(&mut self, file: File, path: PathBuf) -> Result<(), ExtractError> {
        self.submit(Job::File(file, path))
    }

    /// Queues directory `path` for fsync.
    pub fn dir(&mut self, path: PathBuf) -> Result<(), ExtractError> {
        self.submit(Job::Dir(path))
    }

    fn submit(&mut self, job: Job) -> Result<(), ExtractError> {
        self.check()?;
        if self.tx.is_none() {
            self.start()?;
        }
        let tx = self.tx.as_ref().expect("started above");
        if tx.send(job).is_err() {
            // Helpers only stop when the channel closes; a dead one panicked.
            return Err(self.take_error().unwrap_or_else(helper_died));
        }
        Ok(())
    }

    fn start(&mut self) -> Result<(), ExtractError> {
        let (tx, rx) = sync_channel::<Job>(QUEUED);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..HELPERS {
            let rx = Arc::clone(&rx);
            let error = Arc::clone(&self.error);
            let helper = std::thread::Builder::new()
                .name(format!("fsync-{i}"))
                .spawn(move || helper(&rx, &error))
                .map_err(|source| ExtractError::Write {
                    path: PathBuf::from("(fsync helper thread)"),
                    source,
                })?;
            self.helpers.push(helper);
        }
        self.tx = Some(tx);
        Ok(())
    }

    fn check(&self) -> Result<(), ExtractError> {
        match self.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn take_error(&self) -> Option<ExtractError> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }

    /// Waits until everything queued is durable; the first error wins.
    pub fn finish(mut self) -> Result<(), ExtractError> {
        self.tx = None; // helpers drain the queue, then see it closed
        let mut panicked = false;
        for h in self.helpers.drain(..) {
            panicked |= h.join().is_err();
        }
        self.check()?;
        if panicked {
            return Err(helper_died());
        }
        Ok(())
    }
}

fn helper_died() -> ExtractError {
    ExtractError::Write {
        path: PathBuf::from("(fsync helper thread)"),
        source: std::io::Error::other("an fsync helper thread panicked"),
    }
}

fn helper(rx: &Mutex<Receiver<Job>>, error: &Mutex<Option<ExtractError>>) {
    loop {
        let job = {
            let Ok(rx) = rx.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let (result, path) = match job {
            Job::File(file, path) => (file.sync_all(), path),
            Job::Dir(path) => (File::open(&path).and_then(|d| d.sync_all()), path),
        };
        let result = crate::failpoint::io("restore.fsync").map_or(result, Err);
        if let Err(source) = result {
            if let Ok(mut first) = error.lock() {
                first.get_or_insert(ExtractError::Write { path, source });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_fsync_error_is_reported_by_finish_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Syncer::default();
        for i in 0..10 {
            let path = dir.path().join(format!("f{i}"));
            s.file(File::create(&path).unwrap(), path).unwrap();
        }
        let gone = dir.path().join("never-created");
        s.dir(gone.clone()).unwrap();
        match s.finish() {
            Err(ExtractError::Write { path, .. }) => assert_eq!(path, gone),
            other => panic!("expected the missing directory's error, got {other:?}"),
        }
    }

    #[test]
    fn an_earlier_fsync_error_stops_the_next_submission() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Syncer::default();
        s.dir(dir.path().join("missing")).unwrap();
        // The helper reports asynchronously: keep submitting until the error surfaces.
        let mut failed = false;
        for _ in 0..1000 {
            if s.dir(dir.path().to_path_buf()).is_err() {
                failed = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(failed, "the fsync error never stopped later submissions");
    }
}
