use crate::log::{Log, NewRecord, log_key};
use maestro_schemas::{Body, Entry, EntryId, Record, Status};
use std::path::Path;

fn entry(ms: u64) -> NewRecord {
    NewRecord {
        body: Body::Entry(Entry {
            stream: "a".into(),
            id: EntryId { ms, seq: 0 },
            fields: vec![("type".into(), format!("x-{ms}").into_bytes())],
            status: Status::Accepted,
        }),
        request: None,
    }
}

/// A log of `n` records, sealed into segments of `per` (with frames of at most 1024 records).
fn sealed_log(dir: &Path, n: u64, per: u64) -> Log {
    let mut log = Log::open(dir, 1 << 20).unwrap();
    for chunk in (1..=n).collect::<Vec<_>>().chunks(700) {
        log.append(chunk.iter().map(|ms| entry(*ms)).collect()).unwrap();
    }
    log.seal(per).unwrap();
    log
}

fn segment_file(dir: &Path, log: &Log, i: usize) -> std::path::PathBuf {
    dir.join(super::SEGMENTS_DIR).join(log.segments().list()[i].file_name())
}

#[test]
fn sealed_records_read_verify_and_reopen_as_before() {
    let tmp = tempfile::tempdir().unwrap();
    let (before, head_hash) = {
        let mut log = Log::open(tmp.path(), 1 << 20).unwrap();
        for chunk in (1..=5000u64).collect::<Vec<_>>().chunks(700) {
            log.append(chunk.iter().map(|ms| entry(*ms)).collect()).unwrap();
        }
        let before: Vec<_> = log.range(1, 5000).map(Result::unwrap).collect();
        assert_eq!(log.seal(2048).unwrap(), 4096);
        assert_eq!(log.seal(2048).unwrap(), 0, "sealing again is a no-op");
        assert_eq!(log.segments().list().len(), 2);
        assert!(log.db().get(log_key(4096)).unwrap().is_none(), "sealed keys leave sled");
        assert!(log.db().get(log_key(4097)).unwrap().is_some(), "the tail stays");
        (before, log.head_hash())
    };
    let log = Log::open(tmp.path(), 1 << 20).unwrap();
    assert_eq!((log.head_seq(), log.head_hash()), (5000, head_hash));
    let after: Vec<_> = log.range(1, 5000).map(Result::unwrap).collect();
    assert_eq!(before, after);
    assert_eq!(log.verify(1, 5000).unwrap().head_hash, head_hash);
    assert_eq!(log.verify(3000, 4500).unwrap().records, 1501);
    let middle: Vec<_> = log.range(2047, 2050).map(|r| r.unwrap().seq).collect();
    assert_eq!(middle, vec![2047, 2048, 2049, 2050]);
    assert_eq!(log.read(1500).unwrap().unwrap(), before[1499]);
    log.check_point(4096, &maestro_schemas::record::hex(&log.verify(4096, 4096).unwrap().head_hash), "x").unwrap();
}

#[test]
fn a_log_sealed_up_to_its_head_opens_with_its_head() {
    let tmp = tempfile::tempdir().unwrap();
    let hash = sealed_log(tmp.path(), 3000, 1000).head_hash();
    let mut log = Log::open(tmp.path(), 1 << 20).unwrap();
    assert_eq!((log.head_seq(), log.head_hash()), (3000, hash));
    let records = log.append(vec![entry(5000)]).unwrap();
    assert_eq!(records[0].seq, 3001);
    assert_eq!(records[0].prev_hash, hash);
    assert_eq!(log.verify(1, 3001).unwrap().records, 3001);
}

#[test]
fn a_segment_file_no_index_names_is_removed_and_the_keys_stay_the_truth() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut log = Log::open(tmp.path(), 1 << 20).unwrap();
        log.append((1..=300).map(entry).collect()).unwrap();
    }
    let dir = tmp.path().join(super::SEGMENTS_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(super::file_name(1, 100)), b"half a seal").unwrap();
    std::fs::write(dir.join("x.seg.tmp"), b"half a file").unwrap();
    let mut log = Log::open(tmp.path(), 1 << 20).unwrap();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    assert_eq!(log.seal(100).unwrap(), 300);
    assert_eq!(log.verify(1, 300).unwrap().records, 300);
}

#[test]
fn a_flipped_bit_in_a_segment_is_named_by_its_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let log = sealed_log(tmp.path(), 3000, 3000);
    let path = segment_file(tmp.path(), &log, 0);
    let meta = log.segments().list()[0].clone();
    drop(log);
    // A byte inside record 1500's stored bytes: the second frame starts at seq 1025.
    let bytes = std::fs::read(&path).unwrap();
    let frame = meta.frames[1].1 as usize;
    let mut at = frame + super::frame::HEADER;
    for _ in 1025..1500 {
        at += 4 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    let mut damaged = bytes.clone();
    damaged[at + 4 + 10] ^= 0x04;
    std::fs::write(&path, &damaged).unwrap();
    let log = Log::open_with(tmp.path(), 1 << 20, false).unwrap();
    let error = log.verify(1, 3000).unwrap_err().to_string();
    assert!(error.contains("record 1500: checksum mismatch"), "{error}");
    let error = log.range(1400, 1600).find_map(Result::err).unwrap().to_string();
    assert!(error.contains("record 1500"), "{error}");
    drop(log);
    // A flipped bit in a frame header names the frame's first record.
    let mut damaged = bytes;
    damaged[frame + 9] ^= 0x01;
    std::fs::write(&path, &damaged).unwrap();
    let log = Log::open_with(tmp.path(), 1 << 20, false).unwrap();
    let error = log.verify(1, 3000).unwrap_err().to_string();
    assert!(error.contains("record 1025"), "{error}");
}

#[test]
fn a_truncated_deleted_or_reordered_segment_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let log = sealed_log(tmp.path(), 3500, 1500);
    let (first, second) = (segment_file(tmp.path(), &log, 0), segment_file(tmp.path(), &log, 1));
    let meta = log.segments().list()[1].clone();
    drop(log);
    let open_and_verify = || {
        let log = Log::open_with(tmp.path(), 1 << 20, false).unwrap();
        log.verify(1, 3500).unwrap_err().to_string()
    };
    // Cut short inside its second frame (seq 2525 on).
    let bytes = std::fs::read(&second).unwrap();
    std::fs::write(&second, &bytes[..meta.frames[1].1 as usize + 100]).unwrap();
    let error = open_and_verify();
    assert!(error.contains("record 2525: missing") && error.contains("cut short"), "{error}");
    // Two frames swapped.
    let (a, b) = (meta.frames[0].1 as usize, meta.frames[1].1 as usize);
    let mut swapped = bytes[..a].to_vec();
    swapped.extend_from_slice(&bytes[b..]);
    swapped.extend_from_slice(&bytes[a..b]);
    std::fs::write(&second, &swapped).unwrap();
    let error = open_and_verify();
    assert!(error.contains("record 1501"), "{error}");
    std::fs::write(&second, &bytes).unwrap();
    assert!(Log::open(tmp.path(), 1 << 20).unwrap().verify(1, 3500).is_ok());
    // Deleted.
    std::fs::remove_file(&first).unwrap();
    let error = open_and_verify();
    assert!(error.contains("record 1: missing") && error.contains("is gone"), "{error}");
}

#[test]
fn damage_in_sled_is_never_sealed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = Log::open(tmp.path(), 1 << 20).unwrap();
    log.append((1..=500).map(entry).collect()).unwrap();
    let mut stored = log.db().get(log_key(77)).unwrap().unwrap().to_vec();
    stored[12] ^= 1;
    log.db().insert(log_key(77), stored).unwrap();
    let error = log.seal(100).unwrap_err().to_string();
    assert!(error.contains("record 77"), "{error}");
    assert_eq!(log.segments().list().len(), 0, "nothing past the damage was sealed");
    assert!(log.db().get(log_key(1)).unwrap().is_some());
}

/// Rewrites record `seq` of a sealed segment (its length unchanged) through `edit`, with its own
/// checksum and its frame's CRC made right again: damage only the chain can tell.
fn rewrite_sealed_record(path: &Path, meta: &super::SegmentMeta, seq: u64, edit: impl FnOnce(&mut Record)) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = meta.frames.partition_point(|(first, _)| *first <= seq) - 1;
    let (first, frame) = (meta.frames[i].0, meta.frames[i].1 as usize);
    let end = meta.frames.get(i + 1).map_or(bytes.len(), |(_, offset)| *offset as usize);
    let mut at = frame + super::frame::HEADER;
    for _ in first..seq {
        at += 4 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let mut record = Record::decode(seq, &bytes[at + 4..at + 4 + len]).unwrap();
    edit(&mut record);
    let stored = record.encode().unwrap();
    assert_eq!(stored.len(), len);
    bytes[at + 4..at + 4 + len].copy_from_slice(&stored);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[frame..frame + 16]);
    crc.update(&bytes[frame + super::frame::HEADER..end]);
    bytes[frame + 16..frame + 20].copy_from_slice(&crc.finalize().to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn segment_files_checked_on_their_own_count_only_where_they_equal_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let log = sealed_log(tmp.path(), 3500, 1500);
    let dir = tmp.path().join(super::SEGMENTS_DIR);
    // A seal that did not finish left a file the index does not name: checked, never counted.
    std::fs::write(dir.join(super::file_name(3001, 4500)), b"half a seal").unwrap();
    let checks = super::check_files(&dir, 2);
    assert_eq!(checks.len(), 2, "the two sealed files, not the leftover");
    for meta in log.segments().list() {
        assert_eq!(&checks[&meta.file_name()].meta, meta);
    }
    let whole = log.verify(1, 3500).unwrap();
    assert_eq!(log.verify_checked(&checks).unwrap(), whole);
    assert_eq!(log.verify_checked(&super::FileChecks::new()).unwrap(), whole);

    // Damage the second segment after the checks: they are taken as they are where they equal
    // the index, and only there.
    let (path, meta) = (segment_file(tmp.path(), &log, 1), log.segments().list()[1].clone());
    rewrite_sealed_record(&path, &meta, 2600, |record| record.prev_hash[3] ^= 1);
    assert_eq!(log.verify_checked(&checks).unwrap(), whole, "a check equal to the index is taken");
    let mut unchained = checks.clone();
    unchained.get_mut(&meta.file_name()).unwrap().first_prev[0] ^= 1;
    let error = log.verify_checked(&unchained).unwrap_err().to_string();
    assert!(error.contains("record 2600: chain broken"), "a check not chained to its predecessor: {error}");
    let mut reshaped = checks.clone();
    reshaped.get_mut(&meta.file_name()).unwrap().meta.frames.pop();
    let error = log.verify_checked(&reshaped).unwrap_err().to_string();
    assert!(error.contains("record 2600: chain broken"), "a check unlike its index entry: {error}");

    // Checked again, the damaged file (each checksum right, the chain not) is left out and named.
    let checks = super::check_files(&dir, 2);
    assert_eq!(checks.len(), 1, "{:?}", checks.keys());
    let error = log.verify_checked(&checks).unwrap_err().to_string();
    assert!(error.contains("record 2600: chain broken"), "{error}");
}
