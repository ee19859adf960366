//! Corruption is found, not served (R11 quick): a flipped byte in a stored record is named by
//! `maestro verify` and by the engine at start-up; damage to sled's files never panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{append_status_updates, maestro, open_sled};

use maestro_engine::log::{Log, log_key};
use std::path::Path;

fn write_log(dir: &Path, records: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut log = Log::open(dir, 8 << 20).unwrap();
    append_status_updates(&mut log, records);
}

fn flip_record_byte(dir: &Path, seq: u64, offset: usize) {
    let db = open_sled(dir);
    let mut stored = db.get(log_key(seq)).unwrap().unwrap().to_vec();
    let at = offset % stored.len();
    stored[at] ^= 0x01;
    db.insert(log_key(seq), stored).unwrap();
    db.flush().unwrap();
}

#[test]
fn verify_passes_a_clean_log_and_names_the_first_damaged_record() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("d");
    write_log(&dir, 3_000);
    let dir_arg = dir.to_str().unwrap();
    let (code, stdout, _) = maestro(&["verify", "--data-dir", dir_arg]);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("ok: 3000 records"), "{stdout}");

    // Damage two records; verify names the first.
    flip_record_byte(&dir, 2_500, 40);
    flip_record_byte(&dir, 1_234, 7);
    let (code, _, stderr) = maestro(&["verify", "--data-dir", dir_arg]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("record 1234: checksum mismatch"), "{stderr}");

    // Export stops at the damage with the same error, after the good records before it.
    let (code, stdout, stderr) = maestro(&["export", "--data-dir", dir_arg]);
    assert_eq!(code, Some(1));
    assert_eq!(stdout.lines().count(), 1_233);
    assert!(stderr.contains("record 1234"), "{stderr}");
}

#[test]
fn damage_near_the_head_stops_the_engine_at_start_up_with_the_seq_named() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("d");
    write_log(&dir, 100);
    flip_record_byte(&dir, 97, 3);
    let (code, _, stderr) =
        maestro(&["run", "--redis-url", "redis://127.0.0.1:1", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("record 97"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_removed_or_reordered_record_is_named() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("d");
    write_log(&dir, 50);
    {
        let db = open_sled(&dir);
        // Swap records 20 and 21: each checksum is fine, the chain and the seqs are not.
        let a = db.get(log_key(20)).unwrap().unwrap();
        let b = db.get(log_key(21)).unwrap().unwrap();
        db.insert(log_key(20), b).unwrap();
        db.insert(log_key(21), a).unwrap();
        db.flush().unwrap();
    }
    let (code, _, stderr) = maestro(&["verify", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("record 20"), "{stderr}");
}

#[test]
fn bytes_flipped_in_sled_files_give_a_clean_verify_or_a_typed_error_never_a_panic() {
    let data = tempfile::tempdir().unwrap();
    let pristine = data.path().join("pristine");
    write_log(&pristine, 2_000);
    let db_len = std::fs::metadata(pristine.join("db/db")).unwrap().len();
    let mut rng = maestro::traffic::Rng::new(11);
    let rounds = std::env::var("TEST_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(12);
    for round in 0..rounds {
        let dir = data.path().join(format!("copy-{round}"));
        std::fs::create_dir_all(dir.join("db")).unwrap();
        for file in std::fs::read_dir(pristine.join("db")).unwrap().flatten() {
            if file.path().is_file() {
                std::fs::copy(file.path(), dir.join("db").join(file.file_name())).unwrap();
            }
        }
        std::fs::copy(pristine.join("HEAD"), dir.join("HEAD")).unwrap();
        let mut bytes = std::fs::read(dir.join("db/db")).unwrap();
        for _ in 0..4 {
            let at = rng.below(db_len) as usize;
            bytes[at] ^= 1 << rng.below(8);
        }
        std::fs::write(dir.join("db/db"), bytes).unwrap();
        let (code, stdout, stderr) = maestro(&["verify", "--data-dir", dir.to_str().unwrap()]);
        assert!(code == Some(0) || code == Some(1), "round {round}: exit {code:?}\n{stderr}");
        assert!(!stderr.contains("panicked at"), "round {round}: {stderr}");
        if code == Some(0) {
            assert!(stdout.starts_with("ok: 2000 records"), "a clean verify saw the whole log: {stdout}");
        }
    }
}
