//! The read-only tools (`verify`, `export`, `replay state/diff/explain/check`) change not a
//! byte of the data dir they read, whole or damaged (a truncated `db/db`, a deleted `HEAD`,
//! flipped bytes in `db/db` or in a sealed segment file), or of the old layout (the projection
//! store's trees in `db/`, no `store/`): the BLAKE3 of every file is the same before and after
//! each run, and a second `verify` of a damaged dir fails as the first did. The data dir is
//! written by the engine binary from a real `redis-server`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// BLAKE3 of every file under `dir`, by path relative to it.
fn checksums(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            } else {
                let hash = blake3::hash(&std::fs::read(&path).unwrap()).to_hex().to_string();
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), hash);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Every read-only tool's command line over `dir`.
fn tools(dir: &str) -> Vec<Vec<String>> {
    let dd = ["--data-dir", dir];
    let mut out = vec![
        vec!["verify"],
        vec!["verify", "--chain-only"],
        vec!["export"],
        vec!["replay", "state", "--projection", "templates"],
        vec!["replay", "state", "--projection", "templates", "--from-log"],
        vec!["replay", "state", "--projection", "stream_stats", "--at", "5"],
        vec!["replay", "diff", "--from", "3", "--to", "40"],
        vec!["replay", "explain", "--projection", "stream_stats", "--key", "maestro:streams:k8s:status"],
        vec!["replay", "check"],
    ];
    for args in &mut out {
        args.extend(dd);
    }
    out.into_iter().map(|args| args.into_iter().map(String::from).collect()).collect()
}

/// Runs every tool over `dir` (twice for `verify`), checking that no file changed; returns the
/// exit codes of the two `verify` runs.
fn run_all(dir: &Path, case: &str) -> (Option<i32>, Option<i32>) {
    let before = checksums(dir);
    let mut verify = Vec::new();
    for args in tools(dir.to_str().unwrap()).into_iter().chain(std::iter::once(tools(dir.to_str().unwrap())[0].clone()))
    {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, stderr) = maestro(&args);
        assert!(!stderr.contains("panicked at"), "{case}: {args:?}: {stderr}");
        let after = checksums(dir);
        let changed: Vec<_> = before.keys().chain(after.keys()).filter(|p| before.get(*p) != after.get(*p)).collect();
        assert!(changed.is_empty(), "{case}: `maestro {}` changed {changed:?} ({stderr})", args.join(" "));
        if args == ["verify", "--data-dir", dir.to_str().unwrap()] {
            verify.push(code);
        }
    }
    (verify[0], verify[1])
}

/// How a copy of the data dir is damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// `db/db` cut to this percentage of its length.
    Truncate(u64),
    DeleteHead,
    /// Sixteen bits flipped in `db/db`.
    Flip,
    /// One bit flipped in the middle of the first sealed segment file.
    FlipSegment,
    /// `store/db`, the projection store's data file, cut to half its length.
    TruncateStore,
}

impl Damage {
    fn apply(self, dir: &Path) {
        let db = dir.join("db/db");
        let len = std::fs::metadata(&db).unwrap().len();
        match self {
            Damage::Truncate(percent) => {
                std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(len * percent / 100).unwrap()
            }
            Damage::DeleteHead => std::fs::remove_file(dir.join("HEAD")).unwrap(),
            Damage::TruncateStore => {
                let store = dir.join(maestro_engine::datadir::STORE_DIR).join("db");
                let len = std::fs::metadata(&store).unwrap().len();
                std::fs::OpenOptions::new().write(true).open(&store).unwrap().set_len(len / 2).unwrap()
            }
            Damage::FlipSegment => {
                let segment = first_segment(dir);
                let mut bytes = std::fs::read(&segment).unwrap();
                let at = bytes.len() / 2;
                bytes[at] ^= 0x08;
                std::fs::write(&segment, bytes).unwrap();
            }
            Damage::Flip => {
                let mut bytes = std::fs::read(&db).unwrap();
                let mut rng = maestro::traffic::Rng::new(5);
                for _ in 0..16 {
                    let at = rng.below(len) as usize;
                    bytes[at] ^= 1 << rng.below(8);
                }
                std::fs::write(&db, bytes).unwrap();
            }
        }
    }
}

fn first_segment(dir: &Path) -> PathBuf {
    let segments = dir.join(maestro_engine::segments::SEGMENTS_DIR);
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(segments).map_or(Vec::new(), |e| e.flatten().map(|e| e.path()).collect());
    files.sort();
    files.into_iter().next().unwrap_or_default()
}

#[test]
fn read_only_tools_change_no_byte_of_a_whole_or_damaged_data_dir() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    // Small segments, so that the tools read sealed history as well as sled's tail.
    let env = [("MAESTRO_ADMINS", "acme:alice"), ("MAESTRO_SEGMENT_RECORDS", "100")];
    let mut engine = EngineProc::start(&server.url(), &dir, &env);
    produce(&mut conn, 300, 7, false);
    create_large_template(&mut conn, 3);
    wait_drained(&mut conn, Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !first_segment(&dir).is_file() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(first_segment(&dir).is_file(), "the engine sealed a segment");
    assert!(engine.terminate().success(), "{}", engine.stderr());
    assert!(dir.join("values").is_dir(), "the data dir has value files too");

    let (first, second) = run_all(&dir, "whole");
    assert_eq!((first, second), (Some(0), Some(0)), "a whole data dir verifies");

    let old = data.path().join("old-layout");
    copy_dir(&dir, &old);
    to_old_layout(&old);
    let (first, second) = run_all(&old, "old layout");
    assert_eq!((first, second), (Some(0), Some(0)), "an old data dir verifies, its store read from db/");
    assert!(!old.join(maestro_engine::datadir::STORE_DIR).exists(), "nothing moved");

    let damages = [
        Damage::Truncate(60),
        Damage::Truncate(10),
        Damage::DeleteHead,
        Damage::Flip,
        Damage::FlipSegment,
        Damage::TruncateStore,
    ];
    for damage in damages {
        let case = format!("{damage:?}");
        let copy = data.path().join(&case);
        copy_dir(&dir, &copy);
        damage.apply(&copy);
        let (first, second) = run_all(&copy, &case);
        assert_eq!(first, second, "{case}: a second verify answers as the first");
        if !matches!(damage, Damage::Flip | Damage::TruncateStore) {
            assert_eq!(first, Some(1), "{case}: verify finds the damage");
        }
    }
}
