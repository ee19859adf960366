//! Rebuilding projections from the log, offline: every record dispatched again to the same
//! handlers into a scratch store (to compare with the live one, or to answer a question about
//! the past) or into the next generation of the data dir's store (`replay rebuild`). Outputs
//! are never kept (the live run published them); intents only when the caller will run them
//! (the history repository rebuild).

use crate::Result;
use maestro_effects::git::GitHistory;
use maestro_engine::config::EngineConfig;
use maestro_engine::dispatch::{DISPATCHER, Decoder, Dispatcher, Keep, OutputStamp};
use maestro_engine::effects::Effects;
use maestro_engine::error::EngineError;
use maestro_engine::log::Log;
use maestro_engine::log::VALUE_FILES_DIR;
use maestro_engine::segments::Stored;
use maestro_engine::store::{Pending, Store};
use maestro_engine::value_files::ValueFiles;
use maestro_handlers::Handler;
use maestro_schemas::record::{RecordError, hex};
use maestro_schemas::{Record, TypedEvent};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Records read and handed to the lanes at once.
const BATCH: u64 = 4096;

/// The scratch store's sled cache: the staged changes ([`LOAD_BYTES`]) already hold what a
/// rebuild writes and reads back soonest, and every MiB of cache adds to its peak.
const SCRATCH_CACHE_BYTES: u64 = 24 << 20;

/// A scratch store rebuilt from a log, in its own sled database.
#[derive(Debug)]
pub struct Rebuilt {
    pub store: Store,
    pub records: u64,
    _db: sled::Db,
}

/// A projection's state at a log position, to start a rebuild from instead of the log's start.
#[derive(Debug)]
pub struct Seed<'a> {
    pub projection: &'a str,
    pub position: u64,
    pub entries: maestro_engine::store::Entries,
}

/// One replay: records of `log` up to `until`, decoded as `config` says, dispatched to
/// `handlers`, keeping what `keep` names besides state; a seeded projection starts from the
/// seed's state instead of the log's start.
pub struct Replay<'a> {
    log: &'a Log,
    config: &'a EngineConfig,
    handlers: Vec<Arc<dyn Handler>>,
    until: u64,
    keep: Keep,
    seed: Option<Seed<'a>>,
}

impl std::fmt::Debug for Replay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let handlers: Vec<&str> = self.handlers.iter().map(|h| h.name()).collect();
        f.debug_struct("Replay")
            .field("handlers", &handlers)
            .field("until", &self.until)
            .field("keep", &self.keep)
            .field("seed", &self.seed.as_ref().map(|s| (s.projection, s.position)))
            .finish_non_exhaustive()
    }
}

impl<'a> Replay<'a> {
    /// Every record of `log` to `handlers`, state only.
    pub fn new(log: &'a Log, config: &'a EngineConfig, handlers: Vec<Arc<dyn Handler>>) -> Replay<'a> {
        Replay { log, config, handlers, until: u64::MAX, keep: Keep::STATE_ONLY, seed: None }
    }

    /// Up to seq `until` (the log's head at most).
    pub fn until(self, until: u64) -> Replay<'a> {
        Replay { until, ..self }
    }

    pub fn keeping(self, keep: Keep) -> Replay<'a> {
        Replay { keep, ..self }
    }

    /// The seed's projection starts from its state, at its position.
    pub fn seeded(self, seed: Seed<'a>) -> Replay<'a> {
        Replay { seed: Some(seed), ..self }
    }

    /// Replays into a fresh store in its own sled database under `scratch`.
    pub fn rebuild(self, scratch: &Path) -> Result<Rebuilt> {
        let db = sled::Config::new().path(scratch).cache_capacity(SCRATCH_CACHE_BYTES).open().map_err(engine_error)?;
        // The scratch store keeps its value files in the scratch dir too, so nothing is written
        // into the data dir.
        let store = Store::open(&db, ValueFiles::new(scratch.join(VALUE_FILES_DIR)))?.knowing_its_keys();
        let records = self.into_store(&store, &|_, _| {})?;
        Ok(Rebuilt { store, records, _db: db })
    }

    /// Replays into `store` (the records after its positions, the seed loaded first),
    /// reporting (done, total) as batches are dispatched. Returns how many records were read.
    pub fn into_store(mut self, store: &Store, progress: &dyn Fn(u64, u64)) -> Result<u64> {
        if let Some(seed) = self.seed.take() {
            let mut pending = Pending::default();
            for (key, value) in seed.entries {
                store.stage(&mut pending, seed.projection, &key, Some(value))?;
            }
            pending.advance(seed.projection, seed.position);
            store.load(pending)?;
        }
        dispatch_into(self, store, progress)
    }
}

/// Staged changes a rebuild holds before it writes them, shared among its lanes. Measured on
/// the 1M-record bench log (three runs each, one lane): 8 MiB 14.9 s and 357 MiB peak RSS,
/// 32 MiB 12.0-12.9 s and 345-355 MiB, 64 MiB 11.1-11.6 s and 399-409 MiB, 128 MiB 9.8-10.6 s
/// and 429-452 MiB. Below 32 MiB the peak is sled's own; above it each second saved costs
/// about 40 MiB.
const LOAD_BYTES: usize = 32 << 20;

/// Read-ahead between the thread that reads the log and the lanes. Every batch in flight is
/// decoded whole, so more read-ahead raises the peak (four: 277-283 MiB against 243-251 on the
/// 200k-record bench log) while the lanes still wait for the slowest.
const READ_AHEAD: usize = 2;

/// Records a lane decodes at once: small enough that the lanes share a batch's decoding
/// evenly, large enough that a dispatch call's fixed cost stays small.
const CHUNK: usize = 256;

/// Records as the reading thread hands them to every lane: their stored bytes, shared with the
/// frames (or sled values) they were read in, not copied. The lanes and the reader decode them
/// (records, then typed events) a chunk at a time: each first decodes the chunks no other took
/// yet; a lane then dispatches every chunk in order, waiting where another thread is still
/// decoding one. So decoding is spread over the threads instead of serialised on one, and done
/// once.
struct Batch {
    stored: Vec<(u64, Stored)>,
    chunks: Vec<OnceLock<Decoded>>,
    taken: AtomicUsize,
}

/// A chunk decoded: its records and their typed events, or the first record that failed.
type Decoded = std::result::Result<(Vec<Record>, Vec<Option<TypedEvent>>), RecordError>;

impl Batch {
    fn new(stored: Vec<(u64, Stored)>) -> Batch {
        let chunks = (0..stored.len().div_ceil(CHUNK)).map(|_| OnceLock::new()).collect();
        Batch { stored, chunks, taken: AtomicUsize::new(0) }
    }

    fn last_seq(&self) -> u64 {
        self.stored.last().map_or(0, |(seq, _)| *seq)
    }

    /// Chunk `k`, decoded here unless another lane did or is doing it.
    fn chunk(&self, k: usize, decoder: &Decoder) -> &Decoded {
        self.chunks[k].get_or_init(|| {
            let start = k * CHUNK;
            let stored = &self.stored[start..self.stored.len().min(start + CHUNK)];
            let records = stored
                .iter()
                .map(|(seq, stored)| Record::decode(*seq, stored))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let typed = records.iter().map(|r| decoder.typed(r)).collect();
            Ok((records, typed))
        })
    }

    /// Decodes the chunks no lane has taken yet.
    fn help(&self, decoder: &Decoder) {
        loop {
            let k = self.taken.fetch_add(1, Ordering::Relaxed);
            if k >= self.chunks.len() {
                return;
            }
            self.chunk(k, decoder);
        }
    }
}

/// What a lane or the reader tells the thread that waits for them.
enum LaneReport {
    /// Lane `.0` dispatched records up to seq `.1`.
    Dispatched(usize, u64),
    /// A lane dispatched and wrote everything.
    Finished,
    Failed(crate::ReplayError),
}

/// Dispatches the replay's records into `store` (those after the store's positions), reporting
/// (done, total) as batches are dispatched. One thread reads records and checks their frames;
/// when only state is kept, each projection is dispatched on a thread of its own (a lane), since
/// projections read and write only their own keys; otherwise one lane dispatches them all,
/// because outputs and intents are numbered across the handlers of a record. The lanes and the
/// reader decode the records (see [`Batch`]).
fn dispatch_into(replay: Replay<'_>, store: &Store, progress: &dyn Fn(u64, u64)) -> Result<u64> {
    let Replay { log, config, handlers, until, keep, seed: _ } = replay;
    let stamp = OutputStamp { origin: "maestro-replay".into(), dead_letter_maxlen: config.dead_letter_maxlen };
    let decoder = Decoder { streams: config.streams.clone(), limits: config.limits };
    let lanes: Vec<Vec<Arc<dyn Handler>>> =
        if keep == Keep::STATE_ONLY { handlers.into_iter().map(|h| vec![h]).collect() } else { vec![handlers] };
    let budget = LOAD_BYTES / lanes.len().max(1);
    let dispatchers = lanes
        .into_iter()
        .map(|lane| {
            Ok(Dispatcher::new(lane, store.clone(), log, stamp.clone(), decoder.clone(), config.checkpoint_every)?
                .keeping(keep)
                .loading_every(budget))
        })
        .collect::<Result<Vec<_>>>()?;
    let until = until.min(log.head_seq());
    let mut from = u64::MAX;
    for dispatcher in &dispatchers {
        from = from.min(dispatcher.position()?.saturating_add(1));
    }
    if dispatchers.is_empty() || from > until {
        return Ok(0);
    }
    std::thread::scope(|scope| {
        let (reporter, reports) = std::sync::mpsc::channel::<LaneReport>();
        let mut inputs = Vec::new();
        for (lane, dispatcher) in dispatchers.into_iter().enumerate() {
            let (input, batches) = std::sync::mpsc::sync_channel::<Arc<Batch>>(READ_AHEAD);
            inputs.push(input);
            let reporter = reporter.clone();
            let decoder = &decoder;
            scope.spawn(move || run_lane(lane, dispatcher, decoder, &batches, &reporter));
        }
        let lanes = inputs.len();
        let reader = {
            let reporter = reporter.clone();
            let decoder = &decoder;
            scope.spawn(move || read_batches(log, decoder, from, until, &inputs, &reporter))
        };
        drop(reporter);
        // The first failure ends the wait; dropping `reports` and the lanes' inputs (the reader
        // stops at its next send) then stops the rest.
        let mut reached = vec![from - 1; lanes];
        let mut finished = 0;
        while finished < lanes {
            match reports.recv() {
                Ok(LaneReport::Dispatched(lane, seq)) => {
                    reached[lane] = seq;
                    progress(reached.iter().copied().min().unwrap_or(until), until);
                }
                Ok(LaneReport::Finished) => finished += 1,
                Ok(LaneReport::Failed(error)) => return Err(error),
                Err(_) => return Err(stopped("a dispatching lane")),
            }
        }
        reader.join().map_err(|_| stopped("the log reader"))
    })
}

fn stopped(what: &str) -> crate::ReplayError {
    crate::ReplayError::Engine(maestro_engine::error::EngineError::State(format!("{what} stopped without saying why")))
}

/// Decodes (its share) and dispatches every batch it is handed, then writes what is staged;
/// stops at the first error (reported).
fn run_lane(
    lane: usize,
    mut dispatcher: Dispatcher,
    decoder: &Decoder,
    batches: &std::sync::mpsc::Receiver<Arc<Batch>>,
    reporter: &std::sync::mpsc::Sender<LaneReport>,
) {
    let dispatch = |dispatcher: &mut Dispatcher, batch: &Batch| -> Result<()> {
        batch.help(decoder);
        for k in 0..batch.chunks.len() {
            let (records, typed) = batch.chunk(k, decoder).as_ref().map_err(|e| EngineError::Record(e.clone()))?;
            dispatcher.dispatch(records, Some(typed))?;
        }
        Ok(())
    };
    for batch in batches {
        let report = match dispatch(&mut dispatcher, &batch) {
            Ok(()) => LaneReport::Dispatched(lane, batch.last_seq()),
            Err(error) => LaneReport::Failed(error),
        };
        let failed = matches!(report, LaneReport::Failed(_));
        if reporter.send(report).is_err() || failed {
            return;
        }
    }
    let _ = reporter.send(match dispatcher.flush() {
        Ok(()) => LaneReport::Finished,
        Err(error) => LaneReport::Failed(error.into()),
    });
}

/// Reads the stored records `from..=until` in batches (frames checked, records not decoded),
/// hands each to every lane and helps decode it, until done, a read fails (reported) or a lane
/// hangs up. Returns how many records it handed over.
fn read_batches(
    log: &Log,
    decoder: &Decoder,
    from: u64,
    until: u64,
    lanes: &[std::sync::mpsc::SyncSender<Arc<Batch>>],
    reporter: &std::sync::mpsc::Sender<LaneReport>,
) -> u64 {
    let mut next = from;
    while next <= until {
        let last = until.min(next + BATCH - 1);
        let stored = match log.stored_range(next, last).collect::<std::result::Result<Vec<_>, _>>() {
            Ok(stored) => stored,
            Err(error) => {
                let _ = reporter.send(LaneReport::Failed(error.into()));
                break;
            }
        };
        if (stored.len() as u64) < last - next + 1 {
            let missing = next + stored.len() as u64;
            let error = EngineError::Damaged(format!("record {missing}: missing (the log ends at {})", missing - 1));
            let _ = reporter.send(LaneReport::Failed(error.into()));
            break;
        }
        let batch = Arc::new(Batch::new(stored));
        if lanes.iter().any(|lane| lane.send(batch.clone()).is_err()) {
            break;
        }
        // Then a hand in decoding it, most useful when one lane dispatches everything.
        batch.help(decoder);
        next = last + 1;
    }
    next - from
}

/// One projection rebuilt in place: its state hash before (from the old store's keys, not its
/// kept digest, so a state changed behind the engine's back shows; `None` when the old state
/// could not be read, such as a damaged value file, which is what a rebuild repairs) and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuiltProjection {
    pub projection: String,
    pub before: Option<[u8; 32]>,
    pub after: [u8; 32],
}

/// Rebuilds `handlers`' projections from the log into the next generation of the data dir's
/// store, then makes it the live one in one flushed write (see [`Store::replace_live`]); until
/// then the live store is untouched. The rebuild goes as far as the live engine dispatched:
/// records it logged but never dispatched (it stopped, or a damaged store stopped its batch)
/// are left to the engine, which publishes their answers when it dispatches them. A store that
/// never dispatched anything is rebuilt to the log's head, without answers, as before.
pub fn rebuild_in_place(
    log: &Log,
    config: &EngineConfig,
    handlers: Vec<Arc<dyn Handler>>,
    progress: &dyn Fn(u64, u64),
) -> Result<Vec<RebuiltProjection>> {
    let db = log.store_db()?;
    let live = log.store()?;
    let dispatched = live.position(DISPATCHER)?;
    let until = if dispatched == 0 { log.head_seq() } else { dispatched.min(log.head_seq()) };
    let names: Vec<&'static str> = handlers.iter().map(|h| h.name()).collect();
    // Hashed before the rebuild: after it, the pages of the old state come on top of the
    // rebuild's own (measured: 378-385 MiB peak against 352-360).
    let before: Vec<_> = names.iter().map(|name| live.scan_digest(name).ok().map(|d| d.to_bytes())).collect();
    let next = Store::next_generation(db, log.value_files())?;
    Replay::new(log, config, handlers).until(until).into_store(&next, progress)?;
    let outcome = names
        .iter()
        .zip(before)
        .map(|(name, before)| {
            Ok(RebuiltProjection { projection: name.to_string(), before, after: next.state_hash(name)? })
        })
        .collect::<Result<Vec<_>>>()?;
    next.replace_live(db, &live, &names)?;
    Ok(outcome)
}

fn engine_error(error: sled::Error) -> crate::ReplayError {
    crate::ReplayError::Engine(error.into())
}

/// One projection compared: live and rebuilt state hashes at the same position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub projection: String,
    pub position: u64,
    /// The live state's hash, from its stored keys.
    pub live: String,
    pub rebuilt: String,
    /// Whether the digest the live store keeps (and checkpoints from) matches its stored keys.
    pub kept_matches: bool,
}

impl Comparison {
    pub fn equal(&self) -> bool {
        self.live == self.rebuilt && self.kept_matches
    }
}

/// Compares every projection's state hash in the live store with a rebuild up to the live
/// position (the lowest over the projections, so all are compared at the same seq). The live
/// hash is computed from the state as it is stored, not taken from the kept digest, so a
/// changed state store is caught too; a kept digest that disagrees with its state differs too.
pub fn replay_equals_live(
    log: &Log,
    config: &EngineConfig,
    handlers: Vec<Arc<dyn Handler>>,
    scratch: &Path,
) -> Result<Vec<Comparison>> {
    let live = log.store()?;
    let mut position = u64::MAX;
    for handler in &handlers {
        position = position.min(live.position(handler.name())?);
    }
    let names: Vec<&'static str> = handlers.iter().map(|h| h.name()).collect();
    let rebuilt = Replay::new(log, config, handlers).until(position).rebuild(scratch)?;
    names
        .into_iter()
        .map(|name| {
            let stored = live.scan_digest(name)?.to_bytes();
            Ok(Comparison {
                projection: name.to_string(),
                position,
                live: hex(&stored),
                rebuilt: hex(&rebuilt.store.state_hash(name)?),
                kept_matches: stored == live.state_hash(name)?,
            })
        })
        .collect()
}

/// Writes the template history of a store rebuilt with [`Keep::INTENTS`] into a fresh bare repository at `into` and
/// returns its branch heads.
pub fn history(rebuilt: &Rebuilt, into: &Path) -> Result<Vec<(String, String)>> {
    write_history(&rebuilt.store, into)?;
    heads(into)
}

/// Runs the history commits `store` holds as pending intents into the repository at `repo`.
pub(crate) fn write_history(store: &Store, repo: &Path) -> Result<()> {
    let git = GitHistory::open(repo).map_err(|e| crate::ReplayError::History(e.to_string()))?;
    let report = Effects::new(vec![Box::new(git)]).run_pending(store)?;
    match report.failed {
        Some((id, reason)) => Err(crate::ReplayError::History(format!("commit {id}: {reason}"))),
        None => Ok(()),
    }
}

/// The branch heads of a history repository.
pub fn heads(repo: &Path) -> Result<Vec<(String, String)>> {
    let git = GitHistory::open(repo).map_err(|e| crate::ReplayError::History(e.to_string()))?;
    git.heads().map_err(|e| crate::ReplayError::History(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_schemas::{Body, Entry, EntryId, Status};

    fn handlers(config: &EngineConfig) -> Vec<Arc<dyn Handler>> {
        let usage = maestro_handlers::templates::usage::TemplateUsage {
            usage: config.streams.templates_usage.clone(),
            limits: config.limits,
        };
        vec![Arc::new(maestro_handlers::stream_stats::StreamStats), Arc::new(usage)]
    }

    fn usage_fields(i: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let data = format!(
            r#"{{"event_id":"evt-{i}","template_id":"tpl-{}","tenant_id":"t{}","user_id":"u","operation":"retrieve","success":true,"duration_ms":{},"timestamp":"2026-11-0{}T10:00:00"}}"#,
            i % 7,
            i % 3,
            i % 50,
            1 + i % 5
        );
        vec![("data".into(), data.into_bytes())]
    }

    /// Records over two streams, usage events on one, spanning several read batches.
    fn log_of(dir: &Path, config: &EngineConfig, records: u64) -> Log {
        let mut log = Log::open(dir, 8 << 20).unwrap();
        let streams = [config.streams.templates_usage.clone(), config.streams.k8s_status.clone()];
        let body = |i: u64| {
            let stream = streams[(i % 2) as usize].clone();
            let fields = if i.is_multiple_of(2) { usage_fields(i) } else { vec![("data".into(), b"{}".to_vec())] };
            Body::Entry(Entry { stream, id: EntryId { ms: 1_000 + i, seq: 0 }, fields, status: Status::Accepted })
        };
        let records = (0..records).map(|i| maestro_engine::log::NewRecord { body: body(i), request: None }).collect();
        log.append(records).unwrap();
        log
    }

    /// Every projection on a lane of its own ends in the state that one dispatcher of them all
    /// gives; a record damaged in the log stops the lanes with its seq named, and `replay
    /// rebuild` then leaves the live store as it was.
    #[test]
    fn lanes_equal_one_dispatcher_and_a_damaged_record_stops_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig { data_dir: dir.path().to_path_buf(), ..EngineConfig::default() };
        let log = log_of(dir.path(), &config, 3 * BATCH + 100);
        let scratch = tempfile::tempdir().unwrap();
        let head = log.head_seq();
        let replay = || Replay::new(&log, &config, handlers(&config)).until(head);
        let one = replay().keeping(Keep::INTENTS).rebuild(&scratch.path().join("one")).unwrap();
        let lanes = replay().rebuild(&scratch.path().join("lanes")).unwrap();
        assert_eq!(lanes.records, head);
        for handler in handlers(&config) {
            let name = handler.name();
            assert_eq!(lanes.store.position(name).unwrap(), head, "{name}");
            assert_eq!(lanes.store.entries(name).unwrap(), one.store.entries(name).unwrap(), "{name}");
            assert_eq!(lanes.store.state_hash(name).unwrap(), one.store.state_hash(name).unwrap(), "{name}");
            assert_eq!(lanes.store.checkpoints(name).unwrap(), one.store.checkpoints(name).unwrap(), "{name}");
        }
        assert!(lanes.store.entries("template_usage").unwrap().len() > 20, "usage has state to compare");

        let damaged = 2 * BATCH + 7;
        let key = maestro_engine::log::log_key(damaged);
        let mut stored = log.db().get(key).unwrap().unwrap().to_vec();
        stored[12] ^= 1;
        log.db().insert(key, stored).unwrap();
        let error = replay().rebuild(&scratch.path().join("damaged")).unwrap_err().to_string();
        assert!(error.contains(&format!("record {damaged}: checksum mismatch")), "{error}");
        let error = rebuild_in_place(&log, &config, handlers(&config), &|_, _| {}).unwrap_err().to_string();
        assert!(error.contains(&format!("record {damaged}")), "{error}");
        assert_eq!(log.store().unwrap().position("stream_stats").unwrap(), 0, "the live store was not replaced");
    }
}
