//! Step 5 of the batch cycle, second half: effect intents. Handlers return intents (write a
//! template commit, apply a manifest); dispatch queues them in the projection store in the same
//! batch as the state that produced them; here they run, in log order, after the log append.
//!
//! An intent leaves the queue only when it has run (or no runner takes its kind), so a crash
//! loses none; runners are idempotent on the intent's deterministic id, so a crash after the
//! effect and before its removal repeats nothing observable. A failing intent stays first in the
//! queue and is retried at the next batch; ingest goes on meanwhile. A replay queues intents in
//! its own store and never runs them.

pub mod files;
pub mod git;
pub mod kube;

use crate::error::Result;
use crate::store::Store;
use maestro_handlers::Intent;
use std::collections::BTreeSet;

/// What running an intent did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ran {
    /// The effect happened now.
    Done,
    /// It had already happened (a repeat after a crash).
    AlreadyDone,
}

/// Executes the intents of some kinds.
pub trait EffectRunner: Send {
    /// Whether this runner takes intents of `kind`.
    fn handles(&self, kind: &str) -> bool;
    /// Runs one intent; an error leaves it queued, to be retried.
    fn run(&mut self, intent: &Intent) -> std::result::Result<Ran, String>;
}

/// What one pass over the queue did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EffectReport {
    pub done: u64,
    pub repeated: u64,
    pub dropped: u64,
    /// The intent that failed and stopped the pass, with the reason.
    pub failed: Option<(String, String)>,
}

/// The registered runners.
#[derive(Default)]
pub struct Effects {
    runners: Vec<Box<dyn EffectRunner>>,
    warned: BTreeSet<String>,
}

impl std::fmt::Debug for Effects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects").field("runners", &self.runners.len()).finish_non_exhaustive()
    }
}

impl Effects {
    pub fn new(runners: Vec<Box<dyn EffectRunner>>) -> Effects {
        Effects { runners, warned: BTreeSet::new() }
    }

    /// Runs queued intents in order until the queue is empty or one fails.
    pub fn run_pending(&mut self, store: &Store) -> Result<EffectReport> {
        let mut report = EffectReport::default();
        loop {
            let queued = store.effects(256)?;
            if queued.is_empty() {
                return Ok(report);
            }
            for (key, intent) in queued {
                let Some(runner) = self.runners.iter_mut().find(|r| r.handles(&intent.kind)) else {
                    // Nothing here can ever run it: keeping it would stall every later intent.
                    if self.warned.insert(intent.kind.clone()) {
                        tracing::warn!(kind = intent.kind, "no effect runner for this kind: its intents are dropped");
                    }
                    report.dropped += 1;
                    store.remove_effect(&key)?;
                    continue;
                };
                match runner.run(&intent) {
                    Ok(Ran::Done) => report.done += 1,
                    Ok(Ran::AlreadyDone) => report.repeated += 1,
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
                store.remove_effect(&key)?;
            }
        }
    }
}
