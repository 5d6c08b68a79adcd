//! Whole replies, split back into frames and checked against what protocol.md says a real
//! walsender sends.

use testdata::replies::{self, BaseBackupSpec};
use testdata::wire::{self, oid};

/// Splits concatenated backend frames into (tag, body).
fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        out.push((bytes[0], bytes[5..1 + len].to_vec()));
        bytes = &bytes[1 + len..];
    }
    out
}

fn tags(bytes: &[u8]) -> String {
    frames(bytes).iter().map(|(t, _)| *t as char).collect()
}

/// The type oid of column `i` of a RowDescription body.
fn column_type(body: &[u8], i: usize) -> u32 {
    let mut p = 2;
    for col in 0..=i {
        let nul = body[p..].iter().position(|&b| b == 0).unwrap();
        p += nul + 1 + 6;
        let t = u32::from_be_bytes(body[p..p + 4].try_into().unwrap());
        if col == i {
            return t;
        }
        p += 12;
    }
    unreachable!()
}

fn text_values(data_row: &[u8]) -> Vec<Option<String>> {
    let n = u16::from_be_bytes([data_row[0], data_row[1]]) as usize;
    let mut p = 2;
    let mut out = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes(data_row[p..p + 4].try_into().unwrap());
        p += 4;
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some(
                String::from_utf8(data_row[p..p + len as usize].to_vec()).unwrap(),
            ));
            p += len as usize;
        }
    }
    out
}

fn tag_text(body: &[u8]) -> String {
    String::from_utf8(body[..body.len() - 1].to_vec()).unwrap()
}

#[test]
fn identify_system_timeline_type_changes_in_16() {
    for (major, want) in [
        (12, oid::INT4),
        (15, oid::INT4),
        (16, oid::INT8),
        (18, oid::INT8),
    ] {
        let r = replies::identify_system(7_300_000_000_000_000_001, 3, 0x300_0060, major);
        assert_eq!(tags(&r), "TDCZ");
        let f = frames(&r);
        assert_eq!(column_type(&f[0].1, 1), want, "major {major}");
        assert_eq!(
            text_values(&f[1].1),
            vec![
                Some("7300000000000000001".into()),
                Some("3".into()),
                Some("0/3000060".into()),
                None
            ]
        );
        let tag = if major == 12 {
            "SELECT"
        } else {
            "IDENTIFY_SYSTEM"
        };
        assert_eq!(tag_text(&f[2].1), tag);
    }
}

#[test]
fn timeline_history_content_type() {
    let r = replies::timeline_history(2, b"1\t0/3000060\tno recovery target specified\n", 13);
    let f = frames(&r);
    assert_eq!(column_type(&f[0].1, 1), oid::BYTEA);
    assert_eq!(text_values(&f[1].1)[0].as_deref(), Some("00000002.history"));
    let r = replies::timeline_history(0x1A, b"", 14);
    let f = frames(&r);
    assert_eq!(column_type(&f[0].1, 1), oid::TEXT);
    assert_eq!(text_values(&f[1].1)[0].as_deref(), Some("0000001A.history"));
}

#[test]
fn end_of_timeline_sequence() {
    let r = replies::end_of_timeline(2, 0x300_00A0, 16);
    assert_eq!(tags(&r), "TDCCZ");
    let f = frames(&r);
    assert_eq!(column_type(&f[0].1, 0), oid::INT8);
    assert_eq!(column_type(&f[0].1, 1), oid::TEXT);
    assert_eq!(
        text_values(&f[1].1),
        vec![Some("2".into()), Some("0/30000A0".into())]
    );
    assert_eq!(tag_text(&f[2].1), "START_STREAMING");
    assert_eq!(tag_text(&f[3].1), "START_REPLICATION");
    assert_eq!(
        tag_text(&frames(&replies::end_of_timeline(2, 0, 12))[3].1),
        "SELECT"
    );
    assert_eq!(tags(&replies::stream_end(16)), "cCCZ");
    assert_eq!(replies::shutdown_done(), wire::command_complete("COPY 0"));
}

fn terminated_tar(content: &[u8]) -> Vec<u8> {
    let mut t = content.to_vec();
    t.extend(vec![0u8; 1024]);
    t
}

#[test]
fn base_backup_v15_single_copy_out() {
    let spec = BaseBackupSpec::new(0x200_0028, 1, 0x200_0100)
        .with_archive("16385.tar", "/srv/ts", terminated_tar(b"TS"))
        .with_archive("base.tar", "", terminated_tar(&[7u8; 5000]))
        .with_manifest(b"{\"PostgreSQL-Backup-Manifest-Version\": 1}".to_vec())
        .with_chunk_size(2048)
        .with_notice("all required WAL segments have been archived");
    let r = replies::base_backup_v15(&spec);
    let f = frames(&r);
    // start (TDC), tablespaces (TDDC), H, ts archive n d p, base n d d d + notice + p, m d, c,
    // end (TDC), C, Z.
    assert_eq!(tags(&r), "TDCTDDCHdddddddNdddcTDCCZ");
    assert_eq!(
        text_values(&f[1].1),
        vec![Some("0/2000028".into()), Some("1".into())]
    );
    assert_eq!(
        text_values(&f[4].1),
        vec![Some("16385".into()), Some("/srv/ts".into()), None]
    );
    assert_eq!(text_values(&f[5].1), vec![None, None, None]);

    let payloads: Vec<&Vec<u8>> = f
        .iter()
        .filter(|(t, _)| *t == b'd')
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        payloads[0],
        &wire::bb_new_archive_payload("16385.tar", "/srv/ts")
    );
    assert_eq!(&payloads[1][1..], &terminated_tar(b"TS")[..]);
    assert_eq!(payloads[2], &wire::bb_progress_payload(1026));
    assert_eq!(payloads[3], &wire::bb_new_archive_payload("base.tar", ""));
    assert!(payloads[4..7]
        .iter()
        .all(|p| p[0] == b'd' && p.len() <= 2049));
    let base: Vec<u8> = payloads[4..7]
        .iter()
        .flat_map(|p| p[1..].to_vec())
        .collect();
    assert_eq!(base, terminated_tar(&[7u8; 5000]));
    assert_eq!(payloads[7], &wire::bb_progress_payload(1026 + 6024));
    assert_eq!(payloads[8], &wire::bb_manifest_payload());
    assert_eq!(
        &payloads[9][1..],
        b"{\"PostgreSQL-Backup-Manifest-Version\": 1}"
    );
    assert_eq!(tag_text(&f[f.len() - 2].1), "BASE_BACKUP");
}

#[test]
fn base_backup_v14_copy_out_per_tablespace_without_terminator() {
    let spec = BaseBackupSpec::new(0x200_0028, 1, 0x200_0100)
        .with_archive("16385.tar", "/srv/ts", terminated_tar(b"TS"))
        .with_archive("base.tar", "", terminated_tar(b"BASE"))
        .with_manifest(b"{}".to_vec());
    let r = replies::base_backup_v14(&spec, 14);
    assert_eq!(tags(&r), "TDCTDDCHdcHdcHdcTDCCZ");
    let f = frames(&r);
    assert_eq!(f[8].1, b"TS");
    assert_eq!(f[11].1, b"BASE");
    assert_eq!(f[14].1, b"{}");
    assert_eq!(tag_text(&f[f.len() - 2].1), "BASE_BACKUP");
    assert_eq!(
        tag_text(
            &frames(&replies::base_backup_v14(&spec, 12))
                .iter()
                .rev()
                .nth(1)
                .unwrap()
                .1
        ),
        "SELECT"
    );
}

#[test]
fn base_backup_checksum_failure_replaces_last_command_complete() {
    let spec = BaseBackupSpec::new(0x200_0028, 1, 0x200_0100)
        .with_archive("base.tar", "", terminated_tar(b"B"))
        .with_checksum_failure();
    let r = replies::base_backup_v15(&spec);
    assert!(tags(&r).ends_with("TDCEZ"), "{}", tags(&r));
    let e = &frames(&r)[tags(&r).len() - 2].1;
    assert!(e.windows(6).any(|w| w == b"XX001\0"));
}
