//! The applier against a model of pg_combinebackup's reconstruct.c, on random chains: files
//! appear, vanish, come back, grow, shrink and are rewritten whole between backups; every
//! incremental version carries a random truncation length and random changed blocks. The
//! restored files must be the model's byte for byte, with the CRC-32Cs the manifest will list.

use std::collections::{BTreeMap, HashMap};

use pgwire_repl::{Lsn, TimelineId};

use super::apply::{Applier, Pass};
use super::output::IncrementalFrom;
use crate::restore::incremental_file::{BlockGeometry, INCREMENTAL_MAGIC};

const B: usize = 1024;

fn geometry() -> BlockGeometry {
    BlockGeometry {
        block_size: B as u32,
        segment_blocks: 64,
    }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn block(&mut self) -> Vec<u8> {
        let seed = self.next();
        (0..B)
            .map(|i| (seed >> (i % 8 * 8)) as u8 ^ i as u8)
            .collect()
    }
}

#[derive(Clone, Debug)]
enum Version {
    Whole(Vec<u8>),
    Incremental {
        truncation: u32,
        blocks: Vec<(u32, Vec<u8>)>,
    },
}

/// One backup: file name → version (absent: not in the backup).
type Backup = BTreeMap<String, Version>;

/// reconstruct.c: the last version's blocks, then below its truncation length the newest
/// earlier incremental version holding the block, else the newest whole version if it is that
/// long, else zeros.
fn model(chain: &[Backup], name: &str) -> Vec<u8> {
    let last = chain.len() - 1;
    let (truncation, blocks) = match &chain[last][name] {
        Version::Whole(bytes) => return bytes.clone(),
        Version::Incremental { truncation, blocks } => (*truncation, blocks),
    };
    let length = blocks.iter().map(|(b, _)| b + 1).fold(truncation, u32::max) as usize;
    let mut out = vec![0u8; length * B];
    for b in 0..length {
        let dest = &mut out[b * B..(b + 1) * B];
        if let Some((_, data)) = blocks.iter().find(|(n, _)| *n as usize == b) {
            dest.copy_from_slice(data);
            continue;
        }
        if b >= truncation as usize {
            continue;
        }
        for k in (0..last).rev() {
            match &chain[k][name] {
                Version::Whole(bytes) => {
                    if (b + 1) * B <= bytes.len() {
                        dest.copy_from_slice(&bytes[b * B..(b + 1) * B]);
                    }
                    break;
                }
                Version::Incremental { blocks, .. } => {
                    if let Some((_, data)) = blocks.iter().find(|(n, _)| *n as usize == b) {
                        dest.copy_from_slice(data);
                        break;
                    }
                }
            }
        }
    }
    out
}

/// The next backup of a random chain.
fn next_backup(rng: &mut Rng, previous: Option<&Backup>) -> Backup {
    let mut backup = Backup::new();
    for i in 0..6 {
        let name = format!("base/5/{}", 16384 + i);
        let whole = |rng: &mut Rng| {
            let blocks = rng.below(9) as usize;
            Version::Whole((0..blocks).flat_map(|_| rng.block()).collect())
        };
        let version = match previous.and_then(|p| p.get(&name)) {
            None => match rng.below(4) {
                0 => continue, // absent
                _ => whole(rng),
            },
            Some(_) => match rng.below(8) {
                0 => continue, // dropped
                1 => whole(rng),
                _ => {
                    let truncation = rng.below(10) as u32;
                    let mut blocks: Vec<u32> = (0..12).filter(|_| rng.below(3) == 0).collect();
                    blocks.dedup();
                    Version::Incremental {
                        truncation,
                        blocks: blocks.into_iter().map(|b| (b, rng.block())).collect(),
                    }
                }
            },
        };
        backup.insert(name, version);
    }
    backup
}

fn incremental_file(truncation: u32, blocks: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(INCREMENTAL_MAGIC.to_le_bytes());
    f.extend((blocks.len() as u32).to_le_bytes());
    f.extend(truncation.to_le_bytes());
    for (b, _) in blocks {
        f.extend(b.to_le_bytes());
    }
    if !blocks.is_empty() {
        f.resize(f.len().div_ceil(B) * B, 0);
    }
    for (_, data) in blocks {
        f.extend(data);
    }
    f
}

/// The backup's tar stream, as the server sends it (with its backup_label).
fn tar(backup: &Backup, index: usize) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        t.append_data(&mut h, path, data).unwrap();
    };
    let mut label =
        "START WAL LOCATION: 0/1 (file 000000010000000000000000)\nSTART TIMELINE: 1\n".to_string();
    if index > 0 {
        label += &format!("INCREMENTAL FROM LSN: 0/{index:X}\nINCREMENTAL FROM TLI: 1\n");
    }
    add("backup_label", label.as_bytes());
    for (name, version) in backup {
        match version {
            Version::Whole(bytes) => add(name, bytes),
            Version::Incremental { truncation, blocks } => {
                let (dir, file) = name.rsplit_once('/').unwrap();
                add(
                    &format!("{dir}/INCREMENTAL.{file}"),
                    &incremental_file(*truncation, blocks),
                );
            }
        }
    }
    t.into_inner().unwrap()
}

/// The backup holding each final file's newest whole version (what plan.rs computes from
/// the manifests).
fn bases(chain: &[Backup]) -> HashMap<Vec<u8>, usize> {
    let last = chain.len() - 1;
    let mut base = HashMap::new();
    base.insert(b"backup_label".to_vec(), last);
    for name in chain[last].keys() {
        let k = (0..=last)
            .rev()
            .find(|&k| matches!(chain[k].get(name), Some(Version::Whole(_))))
            .expect("generated chains always start from a whole version");
        base.insert(name.as_bytes().to_vec(), k);
    }
    base
}

fn restore(chain: &[Backup]) -> (tempfile::TempDir, HashMap<Vec<u8>, super::apply::FileState>) {
    let dir = tempfile::tempdir().unwrap();
    let last = chain.len() - 1;
    let mut applier = Applier::new(
        bases(chain),
        geometry(),
        last,
        dir.path().to_path_buf(),
        BTreeMap::new(),
    );
    for (k, backup) in chain.iter().enumerate() {
        let pass = Pass {
            index: k,
            backup: format!("b{k}"),
            archive: format!("b{k}/base.tar"),
            root: dir.path().to_path_buf(),
            prefix: String::new(),
            expect_from: k.checked_sub(1).map(|_| IncrementalFrom {
                lsn: Lsn(k as u64),
                timeline: TimelineId(1),
            }),
        };
        applier.apply(&pass, tar(backup, k).as_slice()).unwrap();
    }
    let files = applier.finish().unwrap();
    (dir, files)
}

#[test]
fn random_chains_rebuild_what_reconstruct_c_rebuilds() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..150 {
        let depth = 1 + rng.below(5) as usize;
        let mut chain: Vec<Backup> = Vec::new();
        // Every file starts whole, so an incremental version always has a predecessor.
        while chain.len() < depth {
            let next = next_backup(&mut rng, chain.last());
            chain.push(next);
        }
        let (dir, files) = restore(&chain);
        let last = chain.len() - 1;
        for name in chain[last].keys() {
            let want = model(&chain, name);
            let got = std::fs::read(dir.path().join(name)).unwrap();
            assert!(
                got == want,
                "round {round}, {name}: {} bytes, model {}",
                got.len(),
                want.len()
            );
            let state = files[name.as_bytes()];
            assert_eq!(state.len, want.len() as u64, "round {round}, {name}");
            assert_eq!(
                state.crc,
                Some(crc32c::crc32c(&want)),
                "round {round}, {name}"
            );
        }
        // Nothing else: files of earlier backups that the last one lacks were never written.
        let written: Vec<_> = std::fs::read_dir(dir.path().join("base/5"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(written.len(), chain[last].len(), "round {round}");
        let label = std::fs::read_to_string(dir.path().join("backup_label")).unwrap();
        assert!(!label.contains("INCREMENTAL"), "{label}");
    }
}

#[test]
fn a_label_from_another_parent_stops_the_restore() {
    let chain = vec![
        Backup::from([("base/5/1".into(), Version::Whole(vec![1; B]))]),
        Backup::from([(
            "base/5/1".into(),
            Version::Incremental {
                truncation: 1,
                blocks: vec![],
            },
        )]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut applier = Applier::new(
        bases(&chain),
        geometry(),
        1,
        dir.path().into(),
        BTreeMap::new(),
    );
    let pass = |k: usize, from: u64| Pass {
        index: k,
        backup: format!("b{k}"),
        archive: "base.tar".into(),
        root: dir.path().into(),
        prefix: String::new(),
        expect_from: (k > 0).then_some(IncrementalFrom {
            lsn: Lsn(from),
            timeline: TimelineId(1),
        }),
    };
    applier
        .apply(&pass(0, 0), tar(&chain[0], 0).as_slice())
        .unwrap();
    let e = applier
        .apply(&pass(1, 7), tar(&chain[1], 1).as_slice())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("the chain needs incremental from 0/7"),
        "{e}"
    );
}

#[test]
fn an_incremental_file_without_a_predecessor_is_a_broken_chain() {
    let chain = [
        Backup::new(),
        Backup::from([(
            "base/5/1".into(),
            Version::Incremental {
                truncation: 1,
                blocks: vec![],
            },
        )]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut base = HashMap::new();
    base.insert(b"base/5/1".to_vec(), 0);
    base.insert(b"backup_label".to_vec(), 1);
    let mut applier = Applier::new(base, geometry(), 1, dir.path().into(), BTreeMap::new());
    for (k, backup) in chain.iter().enumerate() {
        let pass = Pass {
            index: k,
            backup: format!("b{k}"),
            archive: "base.tar".into(),
            root: dir.path().into(),
            prefix: String::new(),
            expect_from: (k > 0).then_some(IncrementalFrom {
                lsn: Lsn(k as u64),
                timeline: TimelineId(1),
            }),
        };
        let r = applier.apply(&pass, tar(backup, k).as_slice());
        if k == 1 {
            let e = r.unwrap_err();
            assert!(matches!(e, super::ChainRestoreError::Broken { .. }), "{e}");
        }
    }
}
