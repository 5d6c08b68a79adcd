//! `pgstream list` for people: one block per backup, then the WAL archive by timeline.

use std::fmt::Write as _;

use backup_core::coverage::{Branch, BranchUnknown, TimelineCoverage, WalCoverage};
use backup_core::restore::window::Window;
use backup_core::wal::commits::XactRecord;

use super::{Listed, Listing, NEEDS_PASSPHRASE};
use crate::cmd::human_bytes;

pub(super) fn listing(l: &Listing) -> String {
    let mut out = String::new();
    if l.backups.is_empty() {
        let _ = writeln!(out, "no backups in {}", l.repo);
    } else {
        let _ = writeln!(
            out,
            "backups in {} ({}, oldest first):",
            l.repo,
            l.backups.len()
        );
        for b in &l.backups {
            backup(&mut out, b);
        }
    }
    out.push('\n');
    wal(&mut out, &l.wal);
    if !l.wal.contents_read {
        let _ = writeln!(out, "\nnote: {NEEDS_PASSPHRASE}");
    }
    out
}

fn backup(out: &mut String, b: &Listed) {
    let r = &b.record;
    let status = serde_json::to_value(r.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let pinned = if b.pinned { ", pinned" } else { "" };
    let label = if r.label.is_empty() {
        String::new()
    } else {
        format!("  {:?}", r.label)
    };
    let _ = writeln!(out, "{}  {status}{pinned}{label}", r.id);
    let _ = writeln!(
        out,
        "  time      {} to {} ({:.1} s)",
        r.start_time, r.end_time, r.duration_seconds
    );
    let timeline = if r.start_timeline == r.end_timeline {
        format!("timeline {}", r.end_timeline)
    } else {
        format!("timelines {} to {}", r.start_timeline, r.end_timeline)
    };
    let _ = writeln!(
        out,
        "  lsn       {} to {}, {timeline}",
        r.start_lsn, r.end_lsn
    );
    let _ = writeln!(
        out,
        "  size      {}, {} stored (compression {}, encryption {})",
        human_bytes(r.raw_bytes),
        human_bytes(r.stored_bytes),
        r.compression,
        r.encryption
    );
    if let Some(c) = &b.chain {
        let _ = writeln!(
            out,
            "  chain     incremental of {}, backup {} of a chain from full backup {}; a restore reads {} stored: {}",
            c.parent,
            c.depth,
            c.full,
            human_bytes(c.stored_bytes),
            c.ids.join(" <- ")
        );
        if let Some(m) = &c.missing {
            let _ = writeln!(
                out,
                "  chain     BROKEN: backup {m} is not in the repository; this backup cannot be restored"
            );
        }
    }
    match &b.windows {
        None => {}
        Some(ws) if ws.is_empty() => {
            let _ = writeln!(
                out,
                "  window    none: no timeline with a known history holds this backup"
            );
        }
        Some(ws) => {
            for (w, last) in ws {
                let _ = writeln!(out, "  window    {}", window(w, last.as_ref()));
            }
        }
    }
}

fn window(w: &Window, last: Option<&XactRecord>) -> String {
    let path = w.path();
    let mut s = format!("timeline {}", w.history.timeline());
    if path.len() > 1 {
        let names: Vec<String> = path.iter().map(|t| t.0.to_string()).collect();
        let _ = write!(s, " (path {})", names.join(" -> "));
    }
    if !w.reaches_backup_end() {
        let _ = write!(
            s,
            ": none, the archive ends at {} before the backup's end {} ({} is not archived)",
            w.end, w.start, w.missing
        );
        return s;
    }
    let _ = write!(s, ": {} to {}", w.start, w.end);
    let mut notes = Vec::new();
    if w.ends_in_partial {
        notes.push("ends in a partial segment".to_string());
    }
    match &w.gap_before {
        Some(later) => notes.push(format!(
            "gap: {} is missing although the later {later} is archived",
            w.missing
        )),
        None if !w.ends_in_partial => notes.push(format!("{} is not archived yet", w.missing)),
        None => {}
    }
    match last {
        Some(x) => notes.push(format!("last commit {}", super::commit_time(x))),
        None => notes.push("no commit after the backup's end".to_string()),
    }
    let _ = write!(s, " ({})", notes.join("; "));
    s
}

fn wal(out: &mut String, c: &WalCoverage) {
    let Some(size) = c.segment_size else {
        let _ = writeln!(out, "WAL archive: empty (no backup taken yet)");
        return;
    };
    if c.timelines.is_empty() {
        let _ = writeln!(out, "WAL archive: empty");
        return;
    }
    let _ = writeln!(out, "WAL archive ({} segments):", human_bytes(size.bytes()));
    for t in &c.timelines {
        timeline(out, t);
    }
}

fn timeline(out: &mut String, t: &TimelineCoverage) {
    let branch = match &t.branch {
        Branch::Root => "no parent".to_string(),
        Branch::Forked {
            parent,
            switch_point,
        } => format!("branched from timeline {parent} at {switch_point}"),
        Branch::Unknown(BranchUnknown::NeedsPassphrase) => {
            "branch point unknown: its history file is encrypted".to_string()
        }
        Branch::Unknown(BranchUnknown::NoHistoryFile) => {
            "branch point unknown: no history file in the archive".to_string()
        }
    };
    let _ = writeln!(out, "timeline {} ({branch})", t.timeline);
    // Ranges, gaps and the partial segment in WAL order.
    let mut lines: Vec<(u64, String)> = Vec::new();
    for r in &t.complete {
        lines.push((
            r.first.segno,
            format!(
                "  segments  {} .. {}  {} to {}",
                r.first,
                r.last,
                r.start_lsn(),
                r.end_lsn()
            ),
        ));
    }
    for g in &t.gaps {
        lines.push((
            g.first.segno,
            format!(
                "  gap       {} .. {}  {} to {}: {} segment{} missing",
                g.first,
                g.last,
                g.start_lsn(),
                g.end_lsn(),
                g.segments(),
                if g.segments() == 1 { "" } else { "s" }
            ),
        ));
    }
    if let Some(p) = &t.partial {
        let end = match p.end_lsn() {
            Some(end) => end.to_string(),
            None => "an unknown end (encrypted)".to_string(),
        };
        lines.push((
            p.segment.segno,
            format!(
                "  partial   {} ({})  {} to {end}",
                p.segment,
                p.source.as_str(),
                p.segment.start_lsn()
            ),
        ));
    }
    if lines.is_empty() {
        let _ = writeln!(out, "  no segments yet");
    }
    lines.sort_by_key(|(n, _)| *n);
    for (_, line) in lines {
        let _ = writeln!(out, "{line}");
    }
}
