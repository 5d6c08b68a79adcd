//! `pgstream list --json`: the shape documented in docs/cli.md. Fields are only ever added;
//! LSNs are strings (`"0/5000028"`), segment names are the 24-hex-digit WAL file names.

use backup_core::coverage::{
    Branch, BranchUnknown, PartialCopy, SegmentRange, TimelineCoverage, WalCoverage,
};
use backup_core::restore::window::Window;
use backup_core::wal::commits::{XactEnd, XactRecord};
use serde_json::{json, Value};

use super::{Listed, Listing};

pub(super) fn listing(l: &Listing) -> Value {
    json!({
        "repository": l.repo.to_string(),
        "encrypted": l.encrypted,
        "contents_read": l.wal.contents_read,
        "backups": l.backups.iter().map(backup).collect::<Vec<_>>(),
        "wal": wal(&l.wal),
    })
}

fn backup(b: &Listed) -> Value {
    let r = &b.record;
    json!({
        "id": r.id,
        "label": r.label,
        "status": r.status,
        "start_time": r.start_time,
        "end_time": r.end_time,
        "duration_seconds": r.duration_seconds,
        "start_lsn": r.start_lsn.to_string(),
        "end_lsn": r.end_lsn.to_string(),
        "start_timeline": r.start_timeline,
        "end_timeline": r.end_timeline,
        "raw_bytes": r.raw_bytes,
        "stored_bytes": r.stored_bytes,
        "compression": r.compression,
        "encryption": r.encryption,
        "server_version": r.server_version,
        "system_identifier": r.system_identifier,
        "wal_segment_size": r.wal_segment_size,
        "pinned": b.pinned,
        "incremental": b.chain.as_ref().map(|c| json!({
            "parent": c.parent,
            "full": c.full,
            "depth": c.depth,
            "chain": c.ids,
            "chain_stored_bytes": c.stored_bytes,
            "missing": c.missing,
        })),
        "windows": b.windows.as_ref().map(|ws| {
            ws.iter().map(|(w, last)| window(w, last.as_ref())).collect::<Vec<_>>()
        }),
    })
}

fn window(w: &Window, last: Option<&XactRecord>) -> Value {
    json!({
        "timeline": w.history.timeline().0,
        "timeline_path": w.path().iter().map(|t| t.0).collect::<Vec<_>>(),
        "start_lsn": w.start.to_string(),
        "start_time": w.start_time,
        "end_lsn": w.end.to_string(),
        "ends_in_partial": w.ends_in_partial,
        "reaches_backup_end": w.reaches_backup_end(),
        "first_missing_segment": w.missing.to_string(),
        "gap_before": w.gap_before.map(|s| s.to_string()),
        "last_commit": last.map(|x| json!({
            "lsn": x.lsn.to_string(),
            "time": super::commit_time(x),
            "kind": match x.kind {
                XactEnd::Commit => "commit",
                XactEnd::Abort => "abort",
            },
        })),
    })
}

fn wal(c: &WalCoverage) -> Value {
    json!({
        "segment_size": c.segment_size.map(|s| s.bytes()),
        "timelines": c.timelines.iter().map(timeline).collect::<Vec<_>>(),
    })
}

fn timeline(t: &TimelineCoverage) -> Value {
    let (branch, parent, switch_point) = match &t.branch {
        Branch::Root => ("root", None, None),
        Branch::Forked {
            parent,
            switch_point,
        } => ("forked", Some(parent.0), Some(switch_point.to_string())),
        Branch::Unknown(BranchUnknown::NeedsPassphrase) => ("needs_passphrase", None, None),
        Branch::Unknown(BranchUnknown::NoHistoryFile) => ("no_history_file", None, None),
    };
    json!({
        "timeline": t.timeline.0,
        "branch": branch,
        "parent": parent,
        "switch_point": switch_point,
        "complete": t.complete.iter().map(range).collect::<Vec<_>>(),
        "partial": t.partial.as_ref().map(partial),
        "gaps": t.gaps.iter().map(range).collect::<Vec<_>>(),
    })
}

fn range(r: &SegmentRange) -> Value {
    json!({
        "first_segment": r.first.to_string(),
        "last_segment": r.last.to_string(),
        "segments": r.segments(),
        "start_lsn": r.start_lsn().to_string(),
        "end_lsn": r.end_lsn().to_string(),
    })
}

fn partial(p: &PartialCopy) -> Value {
    json!({
        "segment": p.segment.to_string(),
        "source": p.source.as_str(),
        "start_lsn": p.segment.start_lsn().to_string(),
        "bytes": p.bytes,
        "end_lsn": p.end_lsn().map(|l| l.to_string()),
    })
}
