//! Test support: a handler folded over records in memory, the way the engine dispatches them,
//! keeping the state, the published outputs and the intents.

use crate::contract::{Event, Handler, Intent, apply_changes};
use maestro_schemas::envelope::Limits;
use maestro_schemas::{Body, Entry, EntryId, Origin, Record, Status, StreamSet, decode};
use std::collections::BTreeMap;

pub struct Fold {
    pub handler: Box<dyn Handler>,
    pub state: BTreeMap<Vec<u8>, Vec<u8>>,
    pub published: Vec<BTreeMap<String, String>>,
    pub intents: Vec<Intent>,
    pub seq: u64,
    /// The reason of each record the handler ignored, with its seq.
    pub ignored: Vec<(u64, String)>,
}

impl Fold {
    pub fn new(handler: impl Handler + 'static) -> Fold {
        Fold {
            handler: Box::new(handler),
            state: BTreeMap::new(),
            published: Vec::new(),
            intents: Vec::new(),
            seq: 0,
            ignored: Vec::new(),
        }
    }

    /// Hands one record to the handler; an accepted entry is decoded first, as ingest does.
    pub fn body(&mut self, body: Body) -> Result<(), String> {
        self.seq += 1;
        let record = Record { format: 1, seq: self.seq, prev_hash: [0; 32], body };
        let typed = match &record.body {
            Body::Entry(entry) => {
                // Every stream's role, the optional validation stream's included.
                let streams = StreamSet {
                    automation_validation: Some("maestro:streams:automation:validation".into()),
                    ..StreamSet::default()
                };
                let role = streams.role_of(&entry.stream).ok_or("unknown stream")?;
                let origin = Origin { stream: &entry.stream, entry: entry.id };
                Some(decode(role, origin, &entry.fields, &Limits::default()).map_err(|e| format!("{e:?}"))?.event)
            }
            _ => None,
        };
        let event = Event { record: &record, typed: typed.as_ref() };
        let decision = self.handler.handle(&self.state, event).map_err(|e| e.to_string())?;
        apply_changes(&mut self.state, &decision.changes);
        self.published.extend(decision.outputs.into_iter().map(|o| o.fields.into_iter().collect()));
        self.intents.extend(decision.intents);
        self.ignored.extend(decision.ignored.map(|reason| (self.seq, reason)));
        Ok(())
    }

    /// An accepted entry of `stream` at `ms`.
    pub fn entry(&mut self, stream: &str, ms: u64, fields: &[(&str, String)]) -> Result<EntryId, String> {
        let id = EntryId { ms, seq: 0 };
        let fields = fields.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.clone().into_bytes())).collect();
        self.body(Body::Entry(Entry { stream: stream.into(), id, fields, status: Status::Accepted }))?;
        Ok(id)
    }

    pub fn clock(&mut self, time_ms: u64) {
        self.body(Body::Clock { time_ms }).unwrap_or_else(|e| panic!("clock {time_ms}: {e}"));
    }
}
