//! The end of the demo: what it proved and how long each step took, or, after a failure, the
//! ends of the logs that explain most failures (before the directory is removed).

use std::time::Duration;

use super::{child, Demo};

impl Demo {
    /// After a failure, before the directory goes: the ends of the logs that explain most
    /// failures (run again with --keep to keep them whole).
    pub(super) fn print_log_tails(&self) {
        let logs = [
            self.layout.dir.join("server.log"),
            self.layout.logs().join("receive-wal.log"),
            self.layout.logs().join("load.log"),
        ];
        for log in logs.iter().filter(|l| l.is_file()) {
            eprintln!(
                "--- the end of {} (run with --keep to keep the directory)\n{}",
                log.display(),
                child::log_tail(log, 15)
            );
        }
    }

    pub(super) fn summary(&self, total: Duration) {
        println!("\npgstream demo: PASS");
        println!(
            "Proved, on a throwaway PostgreSQL {} cluster:",
            self.bin.major
        );
        println!(
            "  - receive-wal streamed WAL through a replication slot into an encrypted repository;"
        );
        println!(
            "  - base took a backup, checked against the server's manifest, while the load wrote;"
        );
        println!("  - verify authenticated every stored file and the WAL chain;");
        println!("  - drill restored that backup elsewhere, replayed archived WAL to T through");
        println!(
            "    wal-fetch, promoted, and found the row written before T and none written after."
        );
        for fact in &self.facts {
            println!("  {fact}");
        }
        println!("Timings:");
        for (name, d) in &self.timings {
            println!("  {name:<24} {:>7.1} s", d.as_secs_f64());
        }
        println!("  {:<24} {:>7.1} s", "total", total.as_secs_f64());
        if self.args.keep {
            let l = &self.layout;
            println!("Kept in {}:", l.dir.display());
            println!("  data/ the source cluster (stopped), repo/ the repository, secrets/ its passphrase and the passfile,");
            println!("  logs/ receive-wal and load output, check.sql, drill-report.md");
        }
    }
}
