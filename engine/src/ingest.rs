//! Step 2 of the batch cycle: decide, for each entry Redis delivered, whether it is new to the
//! log and how the engine takes it (accepted, own output, re-sent request, or rejected).

use crate::error::Result;
use crate::log::{Log, NewRecord};
use crate::source::RawEntry;
use maestro_schemas::envelope::{self, Limits, Reject};
use maestro_schemas::own::OutputKey;
use maestro_schemas::{Body, Entry, EntryId, Fields, Origin, Status, StreamSet, TypedEvent, decode};
use std::collections::{HashMap, HashSet};

/// What one read turns into.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Records to append, in delivery order.
    pub records: Vec<NewRecord>,
    /// The typed event of each record (same order), for dispatch: decoded once, here.
    pub decoded: Vec<Option<TypedEvent>>,
    /// Every delivered entry, to acknowledge once the records are durable.
    pub acks: Vec<(String, EntryId)>,
    /// Entries Redis delivered as deleted: their content is gone (trimmed while pending).
    pub lost: Vec<(String, EntryId)>,
}

/// The ingestion rules.
#[derive(Clone, Debug)]
pub struct Ingest {
    pub streams: StreamSet,
    pub limits: Limits,
    pub max_deliveries: u32,
    /// The group's output key: only an entry whose mark it checks is an engine's own output.
    /// Without one (not loaded yet) every entry is input.
    pub output_key: Option<OutputKey>,
    /// Streams whose own outputs are logged with their fields: a projection reads them (the
    /// usage analytics take the `duration_ms` the engine fills in only when it publishes, which
    /// no replay can make again). Own outputs of every other stream are logged by reference
    /// (`Status::OwnRef`): their fields, template bodies included, are already a function of
    /// the log.
    pub own_in_full: Vec<String>,
}

impl Ingest {
    /// Prepares a read for the log. `log` answers which entries and request ids it already has.
    pub fn prepare(&self, log: &Log, raw: Vec<RawEntry>) -> Result<Prepared> {
        let mut out = Prepared::default();
        let mut batch_entries = HashSet::new();
        let mut batch_requests: HashMap<(String, String), u64> = HashMap::new();
        for entry in raw {
            out.acks.push((entry.stream.clone(), entry.id));
            let Some(fields) = entry.fields else {
                out.lost.push((entry.stream, entry.id));
                continue;
            };
            // Redeliveries and claims of entries the log already has are only acknowledged.
            if log.recorded(&entry.stream, entry.id)? || !batch_entries.insert((entry.stream.clone(), entry.id)) {
                continue;
            }
            let seq = log.head_seq() + out.records.len() as u64 + 1;
            let Classified { status, fields, request, typed } = match entry.withheld {
                Some(bytes) => {
                    let reason = envelope::too_large(bytes, &self.limits);
                    Classified::rejected(reason, entry.deliveries, Vec::new())
                }
                None => self.classify(&entry.stream, entry.id, fields, entry.deliveries),
            };
            let (status, request) = match request {
                Some(id) => {
                    let key = (entry.stream.clone(), id);
                    match batch_requests
                        .get(&key)
                        .copied()
                        .map(Ok)
                        .or_else(|| log.request_seen(&key.0, &key.1).transpose())
                    {
                        Some(of_seq) => (Status::Duplicate { of_seq: of_seq? }, None),
                        None => {
                            batch_requests.insert(key.clone(), seq);
                            (status, Some(key))
                        }
                    }
                }
                None => (status, None),
            };
            let typed = if status == Status::Accepted { typed } else { None };
            let body = Body::Entry(Entry { stream: entry.stream, id: entry.id, fields, status });
            out.records.push(NewRecord { body, request });
            out.decoded.push(typed);
        }
        Ok(out)
    }

    /// Status, the fields to keep, the producer's request id and the typed event of one new
    /// entry.
    fn classify(&self, stream: &str, id: EntryId, fields: Fields, deliveries: u32) -> Classified {
        let rejected = |reason: Reject, fields| Classified::rejected(reason, deliveries, fields);
        if let Err(reason) = envelope::check_size(&fields, &self.limits) {
            // The payload of an over-limit entry is not copied anywhere: not to the log, not
            // to the dead-letter stream. Its id and the reason are.
            return rejected(reason, Vec::new());
        }
        if deliveries > self.max_deliveries {
            let reason = Reject::new(
                "redelivered",
                format!("delivered {deliveries} times without being recorded (the limit is {})", self.max_deliveries),
            );
            return rejected(reason, fields);
        }
        if self.output_key.as_ref().is_some_and(|key| key.is_own_output(stream, &fields)) {
            if self.own_in_full.iter().any(|kept| kept == stream) {
                return Classified::kept(Status::Own, fields);
            }
            return Classified::kept(Status::OwnRef(maestro_schemas::own::reference(stream, &fields)), Vec::new());
        }
        let Some(role) = self.streams.role_of(stream) else {
            return rejected(Reject::new("unknown_stream", format!("{stream} is not a configured stream")), fields);
        };
        match decode(role, Origin { stream, entry: id }, &fields, &self.limits) {
            Ok(decoded) => Classified {
                status: Status::Accepted,
                fields,
                request: decoded.producer_request_id,
                typed: Some(decoded.event),
            },
            Err(reason) => rejected(reason, fields),
        }
    }
}

/// What [`Ingest::classify`] decides for one entry.
struct Classified {
    status: Status,
    /// The fields the log keeps (none for an over-limit entry or an own output logged by
    /// reference).
    fields: Fields,
    /// The producer's request id, for duplicate detection.
    request: Option<String>,
    /// The typed event, for dispatch: only an accepted entry has one.
    typed: Option<TypedEvent>,
}

impl Classified {
    fn rejected(reason: Reject, deliveries: u32, fields: Fields) -> Self {
        Classified { status: Status::Rejected { reason, deliveries }, fields, request: None, typed: None }
    }

    /// An entry kept with no request id and nothing to dispatch (an engine's own output).
    fn kept(status: Status, fields: Fields) -> Self {
        Classified { status, fields, request: None, typed: None }
    }
}
