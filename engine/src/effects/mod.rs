//! Step 5 of the batch cycle, second half: effect intents. Handlers return intents (write a
//! template commit, apply a manifest); dispatch queues them in the projection store in the same
//! batch as the state that produced them; here they run, in log order, after the log append.
//!
//! No intent is lost, whatever happens to the process:
//!
//! - It leaves the queue only when it has run, so a crash loses none; runners are idempotent on
//!   the intent's deterministic id, so a crash after the effect and before its removal repeats
//!   nothing observable. A failing intent stays first in the queue and is retried at the next
//!   batch; ingest goes on meanwhile.
//! - An intent of a kind no registered runner takes is set aside, not dropped: it waits
//!   (per kind, in log order) and is queued again at the start of a session that has a runner
//!   for it, such as the engine started again with a Kubernetes cluster configured. Waiting
//!   intents never hold up the intents of other kinds. How many wait, per kind, is in `/status`
//!   and in the `maestro_effects_waiting` gauge; why they wait is logged once per kind.
//! - A runner whose work goes on after [`EffectRunner::run`] returns (a task waiting for an
//!   environment to become ready) answers [`Ran::Started`]: the intent is kept as in flight until
//!   the task's last fact is published ([`Effects::finished`]), and every intent still in flight
//!   when a session starts is queued again, so a task cut short by a crash is run again from
//!   the start. This keeps the engine free of any domain: it needs no knowledge of what an
//!   unfinished task looks like in a projection (an environment in `provisioning` with no
//!   `ready` fact), only the intent and the runner's promise to be idempotent on its id (server-
//!   side apply, facts with ids derived from the intent, taken forward-only by the handler).
//! - A runner may say that an intent it ran makes earlier waiting or in-flight intents pointless
//!   ([`EffectRunner::obsoletes`]): a deletion answered while the apply waits must keep that
//!   apply from ever running, or it would create what nothing deletes again.
//!
//! A replay queues intents in its own store and never runs them.

use crate::error::Result;
use crate::status::Health;
use crate::store::{IntentKey, Store};
use maestro_handlers::Intent;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What running an intent did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ran {
    /// The effect happened now.
    Done,
    /// It had already happened (a repeat after a crash).
    AlreadyDone,
    /// A task goes on with it; the runner reports its end with the task's last fact
    /// ([`Fact::finishes`]). Until then the intent is in flight, and run again at the
    /// next start if the process ends first.
    Started,
}

/// One fact a runner found out, for the engine to publish as a plain entry and read back as
/// input, like any producer's: the runner names the stream and the fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact {
    pub stream: String,
    pub fields: Vec<(String, String)>,
    /// The id of the intent this is the last fact of: once it is published, that intent's task
    /// is over ([`Effects::finished`]).
    pub finishes: Option<String>,
}

/// What a session gives the runners it starts: the data dir (for what they keep on disk) and
/// where to send their facts.
#[derive(Clone, Debug)]
pub struct RunnerContext {
    pub data_dir: std::path::PathBuf,
    pub facts: tokio::sync::mpsc::UnboundedSender<Fact>,
}

/// The effect runners of one session: the engine runs intents of any kind, the caller knows
/// which runners there are. An error stops the engine (a runner that cannot start is a
/// configuration fault).
pub type RunnerFactory = std::sync::Arc<
    dyn Fn(
            RunnerContext,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = std::result::Result<Vec<Box<dyn EffectRunner>>, String>> + Send>,
        > + Send
        + Sync,
>;

/// Tells whether an intent is made pointless by one that ran.
pub type Obsoletes = Box<dyn Fn(&Intent) -> bool>;

/// Executes the intents of some kinds.
pub trait EffectRunner: Send {
    /// Whether this runner takes intents of `kind`.
    fn handles(&self, kind: &str) -> bool;
    /// Runs one intent; an error leaves it queued, to be retried.
    fn run(&mut self, intent: &Intent) -> std::result::Result<Ran, String>;
    /// After `ran` ran: which earlier intents, waiting or in flight, it made pointless (they are
    /// forgotten). None by default.
    fn obsoletes(&self, _ran: &Intent) -> Option<Obsoletes> {
        None
    }
}

/// What one pass over the queue did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EffectReport {
    pub done: u64,
    pub repeated: u64,
    /// Handed to a task that goes on after the pass.
    pub started: u64,
    /// Set aside to wait for a runner of their kind.
    pub parked: u64,
    /// Waiting or in flight, forgotten because an intent that ran made them pointless.
    pub obsoleted: u64,
    /// The intent that failed and stopped the pass, with the reason.
    pub failed: Option<(String, String)>,
}

/// The registered runners, and what the store holds besides the queue.
#[derive(Default)]
pub struct Effects {
    runners: Vec<Box<dyn EffectRunner>>,
    /// Kinds whose waiting was logged.
    warned: BTreeSet<String>,
    /// Intents waiting for a runner, per kind (a kind stays at 0 once its intents have gone).
    waiting: BTreeMap<String, u64>,
    /// Intents this session started and whose tasks have not finished: id → where they are.
    started: HashMap<String, Vec<IntentKey>>,
}

impl std::fmt::Debug for Effects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects")
            .field("runners", &self.runners.len())
            .field("waiting", &self.waiting)
            .field("started", &self.started.len())
            .finish_non_exhaustive()
    }
}

impl Effects {
    pub fn new(runners: Vec<Box<dyn EffectRunner>>) -> Effects {
        Effects { runners, ..Effects::default() }
    }

    /// At the start of a session: queues again the intents left in flight by the previous
    /// one and those waiting for a kind this session has a runner for, and counts the rest.
    /// Returns how many were queued again.
    pub fn resume(&mut self, store: &Store) -> Result<u64> {
        let mut requeued = store.requeue_in_flight()?;
        if requeued > 0 {
            tracing::info!(intents = requeued, "effect intents in flight when the engine last stopped: run again");
        }
        let mut kinds = BTreeMap::<String, u64>::new();
        for (_, intent) in store.waiting_effects()? {
            *kinds.entry(intent.kind).or_default() += 1;
        }
        for (kind, n) in kinds {
            if self.runner_of(&kind).is_some() {
                let moved = store.requeue_waiting(&kind)?;
                tracing::info!(kind, intents = moved, "effect intents that waited for a runner of their kind: queued");
                requeued += moved;
                self.waiting.insert(kind, 0);
            } else {
                self.waiting.insert(kind.clone(), n);
                self.warn_waiting(&kind);
            }
        }
        Ok(requeued)
    }

    fn runner_of(&self, kind: &str) -> Option<usize> {
        self.runners.iter().position(|r| r.handles(kind))
    }

    fn warn_waiting(&mut self, kind: &str) {
        if self.warned.insert(kind.to_string()) {
            let waiting = self.waiting.get(kind).copied().unwrap_or(0);
            tracing::warn!(
                kind,
                waiting,
                "no effect runner takes this kind: its intents wait, in log order, and run when the engine starts \
                 with a runner for it; intents of other kinds run meanwhile"
            );
        }
    }

    /// Intents waiting for a runner, per kind (kinds whose intents all left show 0).
    pub fn waiting(&self) -> &BTreeMap<String, u64> {
        &self.waiting
    }

    /// Intents started in this session whose tasks have not finished.
    pub fn in_flight(&self) -> u64 {
        self.started.values().map(|keys| keys.len() as u64).sum()
    }

    /// Runs queued intents in order until the queue is empty or one fails. Intents of a kind no
    /// runner takes are set aside to wait.
    pub fn run_pending(&mut self, store: &Store) -> Result<EffectReport> {
        let mut report = EffectReport::default();
        loop {
            // Every intent of a pass leaves the queue (run, set aside or started) unless one
            // fails, which ends the pass: each round reads intents not seen before.
            let queued = store.effects(256)?;
            if queued.is_empty() {
                return Ok(report);
            }
            for (key, intent) in queued {
                let Some(at) = self.runner_of(&intent.kind) else {
                    store.park_effect(&key, &intent)?;
                    *self.waiting.entry(intent.kind.clone()).or_default() += 1;
                    self.warn_waiting(&intent.kind);
                    report.parked += 1;
                    continue;
                };
                match self.runners[at].run(&intent) {
                    Ok(Ran::Done) => {
                        report.done += 1;
                        store.remove_effect(&key)?;
                    }
                    Ok(Ran::AlreadyDone) => {
                        report.repeated += 1;
                        store.remove_effect(&key)?;
                    }
                    Ok(Ran::Started) => {
                        report.started += 1;
                        store.start_effect(&key)?;
                        self.started.entry(intent.id.clone()).or_default().push(key.clone());
                    }
                    Err(reason) => {
                        tracing::error!(
                            kind = intent.kind,
                            id = intent.id,
                            reason,
                            "effect failed; retried next batch"
                        );
                        report.failed = Some((intent.id.clone(), reason));
                        return Ok(report);
                    }
                }
                if let Some(pointless) = self.runners[at].obsoletes(&intent) {
                    report.obsoleted += self.forget(store, &key, &*pointless)?;
                }
            }
        }
    }

    /// Forgets the intents before `before` in the log, waiting or in flight, that `pointless`
    /// names.
    fn forget(&mut self, store: &Store, before: &IntentKey, pointless: &dyn Fn(&Intent) -> bool) -> Result<u64> {
        let mut forgotten = 0;
        for (key, intent) in store.waiting_effects()? {
            if key < *before && pointless(&intent) {
                store.drop_waiting_effect(&key, &intent.kind)?;
                if let Some(n) = self.waiting.get_mut(&intent.kind) {
                    *n = n.saturating_sub(1);
                }
                tracing::info!(
                    kind = intent.kind,
                    id = intent.id,
                    "waiting effect intent made pointless by a later one"
                );
                forgotten += 1;
            }
        }
        for (key, intent) in store.effects_in_flight()? {
            if key < *before && pointless(&intent) {
                store.finish_effect(&key)?;
                self.started.remove(&intent.id);
                tracing::info!(kind = intent.kind, id = intent.id, "effect in flight made pointless by a later one");
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    /// The task of intent `id` reported its end and its facts are published: it is no longer
    /// in flight.
    pub fn finished(&mut self, store: &Store, id: &str) -> Result<()> {
        for key in self.started.remove(id).unwrap_or_default() {
            store.finish_effect(&key)?;
        }
        Ok(())
    }

    /// Runs the queue and reports it in `/status` and `/metrics`; a failing intent is an error
    /// in `/status`, retried with the next batch.
    pub fn run_and_report(&mut self, store: &Store, status: &Health) -> Result<()> {
        let report = self.run_pending(store)?;
        metrics::counter!("maestro_effects_done_total").increment(report.done + report.repeated);
        metrics::counter!("maestro_effects_started_total").increment(report.started);
        metrics::counter!("maestro_effects_obsoleted_total").increment(report.obsoleted);
        if let Some((id, reason)) = report.failed {
            metrics::counter!("maestro_effects_failed_total").increment(1);
            status.error(format!("effect {id} failed (retried next batch): {reason}"));
        }
        self.report(status);
        Ok(())
    }

    /// Publishes the waiting and in-flight counts to `/status` and `/metrics`.
    pub fn report(&self, status: &Health) {
        for (kind, n) in &self.waiting {
            metrics::gauge!("maestro_effects_waiting", "kind" => kind.clone()).set(*n as f64);
        }
        metrics::gauge!("maestro_effects_in_flight").set(self.in_flight() as f64);
        status.effects(self.waiting.iter().filter(|(_, n)| **n > 0), self.in_flight());
    }
}
