//! `maestro replay state | diff | explain`: the auditor's questions, answered from the log.

use crate::settings::{self, ConfigArgs};
use anyhow::Context;
use maestro_engine::config::EngineConfig;
use maestro_engine::datadir::DataDir;
use maestro_engine::log::Log;
use maestro_handlers::templates::model::tenant_of;
use maestro_replay::state::{self, KeyChange, Snapshot};
use maestro_schemas::ids::parse_utc_ms;
use maestro_schemas::record::hex;
use std::path::{Path, PathBuf};

/// Prints one line to stdout; a reader that went away (`| head`) ends the command quietly.
pub fn emit(line: impl std::fmt::Display) -> anyhow::Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}

/// Settings and the data dir's log, with the stream keys the log recorded: a replay reads the
/// records as the engine did, whatever this tool's own settings say.
pub fn open(args: &ConfigArgs) -> anyhow::Result<(EngineConfig, DataDir, Log)> {
    let config = settings::load(args)?;
    let (dir, log) = maestro_replay::open_log(&config.data_dir)?;
    Ok((recorded(config, &log)?, dir, log))
}

/// As [`open`], with every segment file checked on its own meanwhile, for `maestro verify`
/// (see [`maestro_replay::open_log_checking_segments`]).
pub fn open_checking_segments(
    args: &ConfigArgs,
) -> anyhow::Result<(EngineConfig, DataDir, Log, maestro_engine::segments::FileChecks)> {
    let config = settings::load(args)?;
    let (dir, log, checks) = maestro_replay::open_log_checking_segments(&config.data_dir)?;
    Ok((recorded(config, &log)?, dir, log, checks))
}

/// As [`open`], with the log opened in place for a tool that writes to it.
pub fn open_writable(args: &ConfigArgs) -> anyhow::Result<(EngineConfig, DataDir, Log)> {
    let config = settings::load(args)?;
    let (dir, log) = maestro_replay::open_log_writable(&config.data_dir)?;
    Ok((recorded(config, &log)?, dir, log))
}

/// `config` with the stream keys of `log`'s last config record; a log without one ran with
/// the default keys (the engine records any other configuration before it reads).
pub fn recorded(mut config: EngineConfig, log: &Log) -> anyhow::Result<EngineConfig> {
    config.streams = log.config()?.map(|(_, streams)| streams).unwrap_or_default();
    Ok(config)
}

/// A log position given as a seq (`1234`) or a time (`2026-11-28T10:00:00Z`).
#[derive(Clone, Debug)]
pub enum At {
    Seq(u64),
    Time(u64),
}

impl std::str::FromStr for At {
    type Err = String;

    fn from_str(text: &str) -> Result<At, String> {
        // Plain digits are a seq; Unix milliseconds are written as a time instead.
        if let Ok(seq) = text.parse() {
            return Ok(At::Seq(seq));
        }
        parse_utc_ms(text)
            .map(At::Time)
            .ok_or_else(|| format!("{text:?} is neither a seq nor a time like 2026-11-28T10:00:00Z"))
    }
}

impl At {
    /// The last record at this position: the seq itself, or the last record at or before the
    /// time.
    pub fn last_seq(&self, log: &Log) -> anyhow::Result<u64> {
        Ok(match self {
            At::Seq(seq) => *seq,
            At::Time(ms) => state::seq_at_time(log, *ms)?,
        })
    }

    /// The first record at this position: the seq itself, or the first record at or after the
    /// time.
    pub fn first_seq(&self, log: &Log) -> anyhow::Result<u64> {
        Ok(match self {
            At::Seq(seq) => *seq,
            At::Time(ms) => state::seq_at_time(log, ms.saturating_sub(1))? + 1,
        })
    }
}

/// The seq `at` names, the log's head when it names none.
fn seq_of(log: &Log, at: Option<&At>) -> anyhow::Result<u64> {
    at.map_or(Ok(log.head_seq()), |at| at.last_seq(log))
}

/// Whether `key` of `projection` belongs to `tenant`. Cross-tenant aggregates (usage per
/// operation or day, stream counts) belong to no tenant.
pub fn tenant_owns(projection: &str, key: &[u8], tenant: &str) -> bool {
    let tenant = tenant.as_bytes();
    match projection {
        maestro_handlers::templates::handler::NAME => tenant_of(key) == Some(tenant),
        maestro_handlers::templates::usage::NAME => match key.get(..2) {
            Some(b"p/" | b"n/") => tenant_of(key) == Some(tenant),
            Some(b"x/") => key.split(|b| *b == 0).nth(1) == Some(tenant),
            _ => false,
        },
        _ => false,
    }
}

/// `maestro replay state`.
pub fn state(config: ConfigArgs, query: StateQuery, list: bool) -> anyhow::Result<()> {
    if list {
        for handler in crate::handlers(&settings::load(&config)?) {
            emit(handler.name())?;
        }
        return Ok(());
    }
    let projection = query.projection.context("--projection is required (see --list)")?;
    let tenant = query.tenant;
    let keep = |key: &[u8]| tenant.as_deref().is_none_or(|t| tenant_owns(&projection, key, t));
    let (config, _dir, log) = match open(&config) {
        Ok(opened) => opened,
        // The engine holds the data dir: it can answer for its own position.
        Err(error) if crate::ask_engine::is_locked(&error) && query.at.is_none() && !query.from_log => {
            let data_dir = settings::load(&config)?.data_dir;
            let (snapshot, addr) = crate::ask_engine::state(&data_dir, &projection)?;
            emit(serde_json::to_string_pretty(&snapshot.to_json(keep))?)?;
            eprintln!("answered by the running engine at {addr}: its store at seq {}", snapshot.seq);
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    let handler = state::find(crate::handlers(&config), &projection)?;
    let seq = seq_of(&log, query.at.as_ref())?;
    let scratch = tempfile::tempdir()?;
    let (snapshot, source) = state::state_at(&log, &config, handler, seq, scratch.path(), query.from_log)?;
    let json = snapshot.to_json(keep);
    emit(serde_json::to_string_pretty(&json)?)?;
    match source {
        state::StateSource::Live { at, tail } => {
            eprintln!(
                "from the live store at seq {at} (its keys match its kept digest), then {tail} records of the log"
            )
        }
        state::StateSource::Log => eprintln!("replayed from the log's first record"),
    }
    Ok(())
}

/// What `maestro replay state` is asked.
#[derive(Debug)]
pub struct StateQuery {
    pub projection: Option<String>,
    pub at: Option<At>,
    pub tenant: Option<String>,
    pub from_log: bool,
}

/// One side of a diff: a position in this data dir's log, or another data dir as it is now.
fn side(config: &EngineConfig, text: &str, scratch: &Path) -> anyhow::Result<Vec<Snapshot>> {
    let dir = PathBuf::from(text);
    if dir.join("db").is_dir() {
        let (_dir, log) = maestro_replay::open_log(&dir)?;
        let store = log.store()?;
        let config = recorded(config.clone(), &log)?;
        return crate::handlers(&config)
            .iter()
            .map(|h| {
                let name = h.name();
                Ok(Snapshot { projection: name.into(), seq: store.position(name)?, entries: store.entries(name)? })
            })
            .collect();
    }
    let at: At = text.parse().map_err(anyhow::Error::msg)?;
    let (_dir, log) = maestro_replay::open_log(&config.data_dir)?;
    let config = &recorded(config.clone(), &log)?;
    let seq = seq_of(&log, Some(&at))?;
    crate::handlers(config)
        .into_iter()
        .map(|handler| {
            let scratch = scratch.join(handler.name());
            Ok(state::state_at(&log, config, handler, seq, &scratch, false)?.0)
        })
        .collect()
}

/// `maestro replay diff`: every key that differs, one JSON line each.
pub fn diff(config: ConfigArgs, from: String, to: String, projection: Option<String>) -> anyhow::Result<()> {
    let config = settings::load(&config)?;
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (before, after) = (side(&config, &from, a.path())?, side(&config, &to, b.path())?);
    let mut changed = 0;
    for (x, y) in before.iter().zip(&after) {
        if projection.as_deref().is_some_and(|p| p != x.projection) {
            continue;
        }
        let changes: Vec<KeyChange> = state::diff(&x.entries, &y.entries);
        for change in &changes {
            emit(change.to_json(&x.projection))?;
        }
        changed += changes.len();
        eprintln!("{}: {} keys differ (seq {} -> {})", x.projection, changes.len(), x.seq, y.seq);
    }
    eprintln!("{changed} keys differ in all");
    Ok(())
}

/// `maestro replay explain`.
pub fn explain(config: ConfigArgs, projection: String, key: String, at: Option<At>) -> anyhow::Result<()> {
    let (config, _dir, log) = open(&config)?;
    let handler = state::find(crate::handlers(&config), &projection)?;
    let seq = seq_of(&log, at.as_ref())?;
    let scratch = tempfile::tempdir()?;
    let key_bytes = state::key_bytes(&key);
    let (writes, current) = state::explain(&log, &config, handler, &key_bytes, seq, scratch.path())?;
    for (seq, deleted) in &writes {
        let record = log.range(*seq, *seq).next().transpose()?.context("record vanished")?;
        let line = maestro_replay::record_json(&record);
        emit(serde_json::json!({ "seq": seq, "deleted": deleted, "record": line }))?;
    }
    match (&current, writes.last()) {
        (Some(value), Some((last, _))) => {
            eprintln!("{key:?} = {} , written last by seq {last}", state::value_json(value))
        }
        (None, Some((last, _))) => eprintln!("{key:?} is absent: removed by seq {last}"),
        _ => eprintln!("no record up to seq {seq} wrote {key:?} in projection {projection}"),
    }
    Ok(())
}

/// `maestro replay rebuild`: projections rebuilt from the log and made live in one write.
pub fn rebuild(config: ConfigArgs, projection: Option<String>) -> anyhow::Result<()> {
    let (config, _dir, log) = open_writable(&config)?;
    let handlers = match &projection {
        Some(name) => vec![state::find(crate::handlers(&config), name)?],
        None => crate::handlers(&config),
    };
    let bar = indicatif::ProgressBar::new(log.head_seq());
    let style = indicatif::ProgressStyle::with_template("rebuild [{bar:40}] {pos}/{len} records {per_sec} eta {eta}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    let rebuilt =
        maestro_replay::rebuild::rebuild_in_place(&log, &config, handlers, &|done, _| bar.set_position(done))?;
    bar.finish();
    for projection in rebuilt {
        let verdict = match projection.before {
            Some(before) if before == projection.after => "unchanged",
            Some(_) => "CHANGED: the live state differed from the log's",
            None => "REPAIRED: the live state could not be read",
        };
        println!("{:<16} rebuilt; state hash {} ({verdict})", projection.projection, &hex(&projection.after)[..16]);
    }
    // The tool holds the data dir, so no commit can be writing a value file meanwhile. With no
    // value file at all there is nothing to sweep, and the scan of every state key for
    // references (0.9 s of a 1M-record rebuild) is skipped.
    let files = log.value_files();
    let keep = if files.is_empty() { Default::default() } else { log.store()?.referenced_files()? };
    let (removed, bytes) = files.sweep(&keep)?;
    println!("value files: {} in use, {removed} that nothing refers to removed ({bytes} bytes)", keep.len());
    Ok(())
}

/// `maestro replay sandbox`: one tenant's records replayed alone, compared with live.
pub fn sandbox(config: ConfigArgs, tenant: String, into: PathBuf) -> anyhow::Result<()> {
    let (config, _dir, log) = open(&config)?;
    let sandbox = maestro_replay::sandbox::sandbox(&log, &config, crate::handlers(&config), &tenant, &into)?;
    println!(
        "sandbox {}: {} records of tenant {tenant:?} (and the config records) replayed",
        into.display(),
        sandbox.records
    );
    let live = log.store()?;
    let alone = sandbox.log.store()?;
    let mut differing = 0;
    for handler in crate::handlers(&config) {
        let name = handler.name();
        let owned = |entries: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<(Vec<u8>, Vec<u8>)> {
            entries.into_iter().filter(|(k, _)| tenant_owns(name, k, &tenant)).collect()
        };
        let (a, b) = (owned(live.entries(name)?), owned(alone.entries(name)?));
        if a.is_empty() && b.is_empty() {
            continue;
        }
        let changes = state::diff(&a, &b);
        for change in &changes {
            emit(change.to_json(name))?;
        }
        differing += changes.len();
        println!(
            "{name:<16} {} keys of {tenant:?}: {}",
            a.len(),
            if changes.is_empty() { "equal to live" } else { "DIFFER from live" }
        );
    }
    let branch = maestro_handlers::templates::history::ref_name(&tenant);
    let head = |repo: &Path| -> anyhow::Result<Option<String>> {
        if !repo.exists() {
            return Ok(None);
        }
        Ok(maestro_replay::rebuild::heads(repo)?.into_iter().find(|(n, _)| *n == branch).map(|(_, id)| id))
    };
    let live_head = head(&config.data_dir.join(maestro_effects::HISTORY_DIR))?;
    let sandbox_head = head(&into.join(maestro_effects::HISTORY_DIR))?;
    println!("history {branch}: live {live_head:?}, sandbox {sandbox_head:?}");
    anyhow::ensure!(differing == 0 && live_head == sandbox_head, "the tenant's state replayed alone differs from live");
    Ok(())
}

/// `maestro replay check`: every projection rebuilt from the log, compared with live.
pub fn check(config: ConfigArgs) -> anyhow::Result<()> {
    let (config, _dir, log) = open(&config)?;
    let scratch = tempfile::tempdir()?;
    let comparisons =
        maestro_replay::rebuild::replay_equals_live(&log, &config, crate::handlers(&config), scratch.path())?;
    let mut differ = Vec::new();
    for c in &comparisons {
        let verdict = match (c.equal(), c.kept_matches) {
            (true, _) => "equal",
            (false, true) => "DIFFERS",
            (false, false) => "DIFFERS (its kept digest does not match its stored state)",
        };
        println!(
            "{:<16} at seq {:>9}: live {} rebuilt {} {verdict}",
            c.projection,
            c.position,
            &c.live[..16],
            &c.rebuilt[..16]
        );
        if !c.equal() {
            differ.push(c.projection.clone());
        }
    }
    anyhow::ensure!(differ.is_empty(), "replay differs from live for: {}", differ.join(", "));
    Ok(())
}

/// `maestro replay history`: the history repository rebuilt from the log, compared with live.
pub fn history(config: ConfigArgs, into: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(!into.exists(), "{} exists already: the rebuild writes a fresh repository", into.display());
    let (config, _dir, log) = open(&config)?;
    let scratch = tempfile::tempdir()?;
    let templates: Vec<std::sync::Arc<dyn maestro_handlers::Handler>> = crate::handlers(&config)
        .into_iter()
        .filter(|h| h.name() == maestro_handlers::templates::handler::NAME)
        .collect();
    let keep = maestro_engine::dispatch::Keep::INTENTS;
    let rebuilt =
        maestro_replay::rebuild::Replay::new(&log, &config, templates).keeping(keep).rebuild(scratch.path())?;
    let heads = maestro_replay::rebuild::history(&rebuilt, &into)?;
    let live_dir = config.data_dir.join(maestro_effects::HISTORY_DIR);
    let live = if live_dir.exists() { maestro_replay::rebuild::heads(&live_dir)? } else { Vec::new() };
    for (name, id) in &heads {
        let mark = match live.iter().find(|(n, _)| n == name) {
            Some((_, live_id)) if live_id == id => "= live",
            Some(_) => "DIFFERS from live",
            None => "not in live",
        };
        println!("{name} {id} {mark}");
    }
    println!("{} branches rebuilt from {} records into {}", heads.len(), rebuilt.records, into.display());
    anyhow::ensure!(heads == live, "the rebuilt history differs from the live repository {}", live_dir.display());
    Ok(())
}
