//! S4: tampering with a 10,000-record log is always detected and the first bad seq is named.
//! 200 cases over six kinds: a changed byte, a deleted record, an inserted record, two records
//! swapped, a truncation that also rewrote the data dir's own head anchor, and a wholesale
//! rewrite with a consistent new chain. The last two pass every check inside the data dir;
//! the anchor kept outside it (the engine's `anchor_file`) catches them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{copy_dir, open_sled};

use maestro_engine::log::{Log, NewRecord, log_key};
use maestro_schemas::record::{GENESIS_HASH, Record, hash_stored, hex};
use maestro_schemas::{Body, Entry, EntryId, Status};
use std::path::{Path, PathBuf};

const RECORDS: u64 = 10_000;
const CASES: u64 = 200;

fn write_log(dir: &Path) -> (u64, String) {
    std::fs::create_dir_all(dir).unwrap();
    let mut log = Log::open(dir, 8 << 20).unwrap();
    let records: Vec<NewRecord> = (1..=RECORDS)
        .map(|i| NewRecord {
            body: Body::Entry(Entry {
                stream: format!(
                    "maestro:streams:{}",
                    ["k8s:status", "templates:usage", "automation:jobs"][i as usize % 3]
                ),
                id: EntryId { ms: 1_795_000_000_000 + i, seq: 0 },
                fields: vec![(
                    "data".into(),
                    format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat((i % 50) as usize)).into_bytes(),
                )],
                status: Status::Accepted,
            }),
            request: None,
        })
        .collect();
    for chunk in records.chunks(1000) {
        log.append(chunk.to_vec()).unwrap();
    }
    (log.head_seq(), hex(&log.head_hash()))
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Rewrites records `from..` with a consistent chain (record `from` altered), and the head
/// anchor inside the data dir to match: everything inside the directory agrees.
fn rewrite_chain(db: &sled::Db, dir: &Path, from: u64, head: u64) {
    let mut prev = if from == 1 { GENESIS_HASH } else { hash_stored(&db.get(log_key(from - 1)).unwrap().unwrap()) };
    for seq in from..=head {
        let mut record = Record::decode(seq, &db.get(log_key(seq)).unwrap().unwrap()).unwrap();
        if seq == from
            && let Body::Entry(entry) = &mut record.body
        {
            entry.fields[0].1 = b"{\"n\":0,\"forged\":true}".to_vec();
        }
        record.prev_hash = prev;
        let stored = record.encode().unwrap();
        prev = hash_stored(&stored);
        db.insert(log_key(seq), stored).unwrap();
    }
    std::fs::write(dir.join("HEAD"), format!("{head} {}\n", hex(&prev))).unwrap();
}

/// Applies tamper case `case` and returns the seq a verifier must name.
fn tamper(dir: &Path, case: u64, rng: &mut Rng, head: u64) -> u64 {
    let db = open_sled(dir);
    let k = 1 + rng.below(head - 1);
    let expected = match case % 6 {
        0 => {
            let mut stored = db.get(log_key(k)).unwrap().unwrap().to_vec();
            let at = rng.below(stored.len() as u64) as usize;
            stored[at] ^= 1 << rng.below(8);
            db.insert(log_key(k), stored).unwrap();
            k
        }
        1 => {
            db.remove(log_key(k)).unwrap();
            k
        }
        2 => {
            // Insert a copy of another record at k, shifting k.. up by one.
            for seq in (k..=head).rev() {
                let stored = db.get(log_key(seq)).unwrap().unwrap();
                db.insert(log_key(seq + 1), stored).unwrap();
            }
            let other = 1 + (k + 1 + rng.below(head - 2)) % head;
            let copy = db.get(log_key(if other >= k { other + 1 } else { other })).unwrap().unwrap();
            db.insert(log_key(k), copy).unwrap();
            k
        }
        3 => {
            let j = k + 1 + rng.below(head - k);
            let (a, b) = (db.get(log_key(k)).unwrap().unwrap(), db.get(log_key(j)).unwrap().unwrap());
            db.insert(log_key(k), b).unwrap();
            db.insert(log_key(j), a).unwrap();
            k
        }
        4 => {
            // Truncate from k and move the data dir's own head anchor back to match.
            for seq in k..=head {
                db.remove(log_key(seq)).unwrap();
            }
            let last = hash_stored(&db.get(log_key(k - 1)).unwrap().unwrap());
            std::fs::write(dir.join("HEAD"), format!("{} {}\n", k - 1, hex(&last))).unwrap();
            k
        }
        _ => {
            rewrite_chain(&db, dir, k, head);
            // Only the external anchor (the head) can tell: it is what gets named.
            head
        }
    };
    db.flush().unwrap();
    expected
}

/// Everything `maestro verify --anchor-file` checks, in-process: opening, chain, the data
/// dir's anchor, the external anchor.
fn verify(dir: &Path, anchor: &(u64, String)) -> Result<(), String> {
    let log = Log::open_with(dir, 8 << 20, false).map_err(|e| e.to_string())?;
    maestro_replay::verify_log(&log).map_err(|e| e.to_string())?;
    log.check_point(anchor.0, &anchor.1, "anchor file").map_err(|e| e.to_string())
}

#[test]
fn every_tampering_of_a_10k_record_log_is_detected_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine: PathBuf = tmp.path().join("pristine");
    let anchor = write_log(&pristine);
    assert_eq!(anchor.0, RECORDS);
    verify(&pristine, &anchor).unwrap();
    let mut rng = Rng(4);
    let mut missed = Vec::new();
    for case in 0..CASES {
        let dir = tmp.path().join(format!("case-{case}"));
        copy_dir(&pristine, &dir);
        let expected = tamper(&dir, case, &mut rng, anchor.0);
        match verify(&dir, &anchor) {
            Ok(()) => missed.push(format!("case {case} (kind {}): not detected", case % 6)),
            Err(error) if !error.contains(&format!("record {expected}")) => {
                missed.push(format!("case {case} (kind {}): expected record {expected} named, got: {error}", case % 6))
            }
            Err(_) => {}
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(missed.is_empty(), "{} of {CASES} not detected as expected:\n{}", missed.len(), missed.join("\n"));
}
