//! The log's sealed segments seen from outside: an old data dir (records only in sled) is sealed
//! on the engine's first start and reads, exports and verifies as before; damage inside a
//! segment file (a flipped bit, two frames swapped, a file cut short or deleted) is named by
//! seq by `maestro verify`, by `maestro export` and by the engine at start-up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use maestro_engine::log::Log;
use maestro_engine::segments::{SEGMENTS_DIR, SegmentMeta};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A log of `records`, sealed into segments of `per`; the segments' index entries.
fn sealed_log(dir: &Path, records: u64, per: u64) -> Vec<SegmentMeta> {
    std::fs::create_dir_all(dir).unwrap();
    let mut log = Log::open(dir, 8 << 20).unwrap();
    append_status_updates(&mut log, records);
    log.seal(per).unwrap();
    log.segments().list().to_vec()
}

fn segment_path(dir: &Path, meta: &SegmentMeta) -> PathBuf {
    dir.join(SEGMENTS_DIR).join(meta.file_name())
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(SEGMENTS_DIR)).map_or(0, |entries| entries.count())
}

fn verify_error(dir: &Path) -> String {
    let (code, stdout, stderr) = maestro(&["verify", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn an_old_data_dir_is_sealed_on_first_start_and_reads_as_before() {
    let server = redis(true);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    std::fs::create_dir_all(&dir).unwrap();
    {
        let mut log = Log::open(&dir, 8 << 20).unwrap();
        append_status_updates(&mut log, 2_600);
    }
    let before = export(&dir);
    assert_eq!(segment_files(&dir), 0);
    let env = [("MAESTRO_SEGMENT_RECORDS", "1000")];
    for start in 0..2 {
        let mut engine = EngineProc::start(&server.url(), &dir, &env);
        engine.wait_connected();
        let deadline = Instant::now() + Duration::from_secs(30);
        while segment_files(&dir) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(engine.terminate().success(), "{}", engine.stderr());
        engine.assert_no_panic();
        assert_eq!(segment_files(&dir), 2, "start {start}: two segments, sealed once");
    }
    let after = export(&dir);
    assert_eq!(after[..before.len()], before[..], "every record and its hash read back unchanged");
    let arg = dir.to_str().unwrap();
    let (code, out, err) = maestro(&["verify", "--data-dir", arg]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.starts_with(&format!("ok: {} records", after.len())), "{out}");
    let (code, out, err) = maestro(&["replay", "check", "--data-dir", arg]);
    assert_eq!(code, Some(0), "replay differs from live:\n{out}\n{err}");
    let db = open_sled(&dir);
    assert!(db.get(maestro_engine::log::log_key(2000)).unwrap().is_none(), "sealed records left sled");
}

#[test]
fn a_flipped_bit_in_a_segment_is_named_by_verify_export_and_the_engine() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("d");
    let metas = sealed_log(&dir, 3_000, 1_500);
    let arg = dir.to_str().unwrap();
    let (code, out, _) = maestro(&["verify", "--data-dir", arg]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("ok: 3000 records"), "{out}");

    // The record's bytes sit in the second frame of the second segment (seqs 2525 on).
    let path = segment_path(&dir, &metas[1]);
    let clean = std::fs::read(&path).unwrap();
    let frame = metas[1].frames[1].1 as usize;
    let mut at = frame + 24;
    for _ in 2525..2600 {
        at += 4 + u32::from_le_bytes(clean[at..at + 4].try_into().unwrap()) as usize;
    }
    let mut damaged = clean.clone();
    damaged[at + 30] ^= 0x10;
    std::fs::write(&path, &damaged).unwrap();
    let error = verify_error(&dir);
    assert!(error.contains("record 2600: checksum mismatch"), "{error}");
    let (code, stdout, stderr) = maestro(&["export", "--data-dir", arg]);
    assert_eq!(code, Some(1));
    // A frame is checked whole: export stops where the damaged frame starts (seq 2525), and
    // names the damaged record.
    assert_eq!(stdout.lines().count(), 2_524, "export stops at the damaged frame");
    assert!(stderr.contains("record 2600"), "{stderr}");

    // The last record, within the tail the engine checks at start-up.
    let mut damaged = clean;
    let end = damaged.len();
    damaged[end - 5] ^= 0x01;
    std::fs::write(&path, &damaged).unwrap();
    let (code, _, stderr) = maestro(&["run", "--redis-url", "redis://127.0.0.1:1", "--data-dir", arg]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("record 3000"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_segment_cut_short_reordered_or_deleted_is_named() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("d");
    let metas = sealed_log(&dir, 3_000, 1_500);
    let path = segment_path(&dir, &metas[0]);
    let clean = std::fs::read(&path).unwrap();
    let (a, b) = (metas[0].frames[0].1 as usize, metas[0].frames[1].1 as usize);

    std::fs::write(&path, &clean[..b + 1000]).unwrap();
    let error = verify_error(&dir);
    assert!(error.contains("record 1025: missing") && error.contains("cut short"), "{error}");

    let mut swapped = clean[..a].to_vec();
    swapped.extend_from_slice(&clean[b..]);
    swapped.extend_from_slice(&clean[a..b]);
    std::fs::write(&path, &swapped).unwrap();
    assert!(verify_error(&dir).contains("record 1:"));

    std::fs::remove_file(&path).unwrap();
    let error = verify_error(&dir);
    assert!(error.contains("record 1: missing") && error.contains("is gone"), "{error}");

    // A whole segment swapped for a copy of another under its name: the frames name the wrong seqs.
    std::fs::copy(segment_path(&dir, &metas[1]), &path).unwrap();
    assert!(verify_error(&dir).contains("record 1:"));
    std::fs::write(&path, &clean).unwrap();
    let (code, _, stderr) = maestro(&["verify", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
}
