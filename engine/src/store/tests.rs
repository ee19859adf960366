use super::keys::state_key;
use super::*;
use maestro_handlers::StateView;
use maestro_schemas::codec;

#[test]
fn outbox_entries_written_before_elapsed_times_still_decode() {
    #[derive(Serialize)]
    struct Old {
        seq: u64,
        index: u32,
        stream: String,
        fields: Vec<(String, Vec<u8>)>,
        maxlen: Option<u64>,
    }
    // Field names were `String`s then: they read back as the same bytes.
    let old_fields = vec![("data".to_string(), b"{}".to_vec())];
    let old = Old { seq: 9, index: 1, stream: "s".into(), fields: old_fields, maxlen: Some(10) };
    let item = OutboxItem::decode(&codec::encode(&old).unwrap()).unwrap();
    let fields = vec![(b"data".to_vec(), b"{}".to_vec())];
    let expected = OutboxItem { seq: 9, index: 1, stream: "s".into(), fields, maxlen: Some(10), elapsed_from_ms: None };
    assert_eq!(item, expected);
    let timed = OutboxItem { elapsed_from_ms: Some(1_795_851_623_000), ..expected };
    assert_eq!(OutboxItem::decode(&codec::encode(&timed).unwrap()).unwrap(), timed);
}

/// A sled database in a temp dir (kept while the first element lives), its value files and
/// its live store.
fn fresh() -> (tempfile::TempDir, sled::Db, ValueFiles, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(tmp.path()).open().unwrap();
    let files = ValueFiles::new(tmp.path().join("files"));
    let live = Store::open(&db, files.clone()).unwrap();
    (tmp, db, files, live)
}

fn fill(store: &Store, name: &str, n: u32, seq: u64) {
    let mut pending = Pending::default();
    for i in 0..n {
        store
            .stage(&mut pending, name, format!("k{i:06}").as_bytes(), Some(format!("v{i}-{seq}").into_bytes()))
            .unwrap();
    }
    pending.advance(name, seq);
    store.commit(pending).unwrap();
}

/// The kept digest always equals one computed from scratch, through puts, overwrites and
/// deletes, committed or loaded.
#[test]
fn the_kept_digest_stays_exact() {
    let (_tmp, _db, files, live) = fresh();
    fill(&live, "p", 25_000, 7);
    let mut pending = Pending::default();
    live.stage(&mut pending, "p", b"k000003", None).unwrap();
    live.stage(&mut pending, "p", b"k000004", Some(b"changed".to_vec())).unwrap();
    live.stage(&mut pending, "p", b"k000005", Some(b"v5-7".to_vec())).unwrap(); // unchanged: nothing staged
    live.stage(&mut pending, "p", b"k000006", Some(b"twice".to_vec())).unwrap();
    live.stage(&mut pending, "p", b"k000006", Some(b"v6-7".to_vec())).unwrap(); // back to the stored value
    // Values kept as files count by their bytes, not by their references.
    for (key, byte) in [(&b"big1"[..], b'a'), (b"big2", b'b'), (b"big3", b'c')] {
        live.stage(&mut pending, "p", key, Some(vec![byte; 10_000])).unwrap();
    }
    live.commit(pending).unwrap();
    assert_eq!(live.digest("p").unwrap(), live.scan_digest("p").unwrap());
    let mut pending = Pending::default();
    live.stage(&mut pending, "p", b"big1", None).unwrap();
    live.stage(&mut pending, "p", b"big2", Some(vec![b'z'; 5_000])).unwrap();
    live.stage(&mut pending, "p", b"big3", Some(vec![b'c'; 10_000])).unwrap(); // unchanged: nothing staged
    assert_eq!(pending.bytes(), "pp\0big1".len() + "pp\0big2".len() + 5_000);
    live.commit(pending).unwrap();
    assert_eq!(live.digest("p").unwrap(), live.scan_digest("p").unwrap());
    assert_eq!(live.value("p", b"big2").unwrap(), Some(vec![b'z'; 5_000]));
    let pending = Pending::default();
    let view = View::new(&live, &pending, "p");
    assert_eq!(view.get(b"big3"), Some(vec![b'c'; 10_000]));
    assert_eq!(view.scan(b"big"), vec![(b"big2".to_vec(), vec![b'z'; 5_000]), (b"big3".to_vec(), vec![b'c'; 10_000])]);
    assert_eq!(view.unreadable(), None);
    // A value file gone: the view says so, instead of only answering that there is no value.
    let reference = |key: &[u8]| ValueFiles::reference(&live.tree.get(state_key("p", key)).unwrap().unwrap());
    let (big2, big3) = (reference(b"big2").unwrap(), reference(b"big3").unwrap());
    // Gone: big3's file, and those of big1 and of big2's first value, which nothing refers to.
    assert_eq!(files.sweep(&HashSet::from([big2])).unwrap().0, 3);
    assert_eq!(view.get(b"big3"), None);
    let why = view.unreadable().unwrap();
    assert!(why.contains(&maestro_schemas::record::hex(&big3)) && why.contains("replay rebuild"), "{why}");
    // Storing the same bytes again (as a rebuild does) brings it back.
    files.stored_form(vec![b'c'; 10_000]).unwrap();
    assert_eq!(view.get(b"big3"), Some(vec![b'c'; 10_000]));
    // A load writes state before the digest: the digest must not count it twice.
    let mut pending = Pending::default();
    for i in 0..2_500u32 {
        live.stage(&mut pending, "q", &i.to_be_bytes(), Some(vec![1; 40])).unwrap();
    }
    live.stage(&mut pending, "p", b"k000007", None).unwrap();
    live.load(pending).unwrap();
    for name in ["p", "q"] {
        assert_eq!(live.digest(name).unwrap(), live.scan_digest(name).unwrap(), "{name}");
    }
}

/// A store that knows its keys (a rebuild's target) answers reads of keys it never wrote
/// without sled, and reads every key once others were copied in by the swap.
#[test]
fn a_store_that_knows_its_keys_reads_them_and_forgets_them_when_others_come_in() {
    let (_tmp, db, files, live) = fresh();
    fill(&live, "p", 100, 7);
    fill(&live, "q", 50, 7);
    let knows = |store: &Store| store.written.read().unwrap().is_some();
    assert!(!knows(&Store::open(&db, files.clone()).unwrap().knowing_its_keys()), "not empty: it cannot know");
    let next = Store::next_generation(&db, files.clone()).unwrap();
    assert!(knows(&next));
    fill(&next, "p", 10, 9);
    let pending = Pending::default();
    assert_eq!(View::new(&next, &pending, "p").get(b"k000003"), Some(b"v3-9".to_vec()));
    assert_eq!(View::new(&next, &pending, "p").get(b"k000050"), None);
    // Written behind its back (not through the store): not seen, which is why only a store
    // that nobody else writes may know its keys.
    next.tree.insert(state_key("p", b"k000050"), b"behind".as_slice()).unwrap();
    assert_eq!(View::new(&next, &pending, "p").get(b"k000050"), None);
    next.replace_live(&db, &live, &["p"]).unwrap();
    assert!(!knows(&next));
    assert_eq!(View::new(&next, &pending, "q").get(b"k000003"), Some(b"v3-7".to_vec()), "copied from live");
    let mut pending = Pending::default();
    next.stage(&mut pending, "q", b"k000004", None).unwrap();
    next.commit(pending).unwrap();
    assert_eq!(next.digest("q").unwrap(), next.scan_digest("q").unwrap(), "the copied value left the digest");
}

/// A new generation replaces the live store whole: the rebuilt projections come from it,
/// everything else is copied from the old one, which is dropped; a generation left behind
/// by an interrupted rebuild is dropped at the next open.
#[test]
fn a_new_generation_replaces_the_live_store() {
    let (_tmp, db, files, live) = fresh();
    fill(&live, "p", 3_000, 7);
    fill(&live, "pq", 1_500, 7); // a name that starts like "p": must be copied, not skipped
    let mut pending = Pending::default();
    live.stage(&mut pending, "pq", b"large", Some(vec![7; 8_000])).unwrap();
    live.commit(pending).unwrap();
    let mut pending = Pending::default();
    pending.advance("_dispatch", 7);
    pending.publish(OutboxItem {
        seq: 7,
        index: 0,
        stream: "s".into(),
        fields: vec![],
        maxlen: None,
        elapsed_from_ms: None,
    });
    live.commit(pending).unwrap();
    let next = Store::next_generation(&db, files.clone()).unwrap();
    fill(&next, "p", 1_200, 9);
    let rebuilt = next.entries("p").unwrap();
    let copied = next.replace_live(&db, &live, &["p"]).unwrap();
    assert!(copied >= 1_500 + 2, "copied {copied}");
    let reopened = Store::open(&db, files.clone()).unwrap();
    assert_eq!(reopened.entries("p").unwrap(), rebuilt);
    assert_eq!(reopened.position("p").unwrap(), 9);
    assert_eq!(reopened.digest("p").unwrap(), reopened.scan_digest("p").unwrap());
    assert_eq!(reopened.entries("pq").unwrap().len(), 1_501);
    assert_eq!(reopened.value("pq", b"large").unwrap(), Some(vec![7; 8_000]), "a value file survives the swap");
    assert_eq!(reopened.position("_dispatch").unwrap(), 7);
    assert_eq!(reopened.outbox(10).unwrap().len(), 1);
    assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"state"), "the old generation is dropped");
    // An interrupted rebuild: a next generation that was never made live.
    let stray = Store::next_generation(&db, files.clone()).unwrap();
    fill(&stray, "p", 10, 11);
    drop(stray);
    let reopened = Store::open(&db, files.clone()).unwrap();
    assert_eq!(reopened.position("p").unwrap(), 9);
    assert_eq!(db.tree_names().iter().filter(|n| n.starts_with(b"state")).count(), 1);
}

/// The publish mark is set once where a store without one stands, moves only up and only with a
/// removal, and a commit's regenerable outputs come back from it without being written.
#[test]
fn the_publish_mark_starts_once_and_only_moves_up() {
    let (_tmp, _db, _files, store) = fresh();
    assert_eq!(store.published_through().unwrap(), None);
    store.start_publish_mark(7).unwrap();
    store.start_publish_mark(3).unwrap();
    assert_eq!(store.published_through().unwrap(), Some(7));
    let item =
        |seq| OutboxItem { seq, index: 0, stream: "s".into(), fields: vec![], maxlen: None, elapsed_from_ms: None };
    let mut pending = Pending::default();
    pending.publish(item(8));
    pending.publish_regenerable(item(9));
    let outputs = store.commit(pending).unwrap();
    assert_eq!((outputs.stored, outputs.regenerable), (vec![item(8)], vec![item(9)]));
    assert_eq!(store.first_outbox().unwrap(), Some((8, 0)));
    assert_eq!(store.outbox_between(8, u64::MAX, 10).unwrap().len(), 0, "only the stored one, at seq 8");
    store.remove_outbox_at(&[(8, 0)], Some(9)).unwrap();
    assert_eq!((store.first_outbox().unwrap(), store.published_through().unwrap()), (None, Some(9)));
    store.remove_outbox_at(&[], Some(5)).unwrap();
    assert_eq!(store.published_through().unwrap(), Some(9), "never lowered");
}
