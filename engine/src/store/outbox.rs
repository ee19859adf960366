//! The outbox entry: an output waiting to be published, stored with the state that produced it.
//! A field that repeats a run of a value file the handlers read (an answer carrying a template
//! body) is stored as bytes and references to that run ([`crate::value_files::Piece`]), so the
//! body is not written a second time; the entry is read back whole.

use crate::error::{EngineError, Result};
use crate::value_files::{Index, Piece, ValueFiles};
use maestro_schemas::codec;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// An entry waiting to be published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub seq: u64,
    pub index: u32,
    pub stream: String,
    /// Names and values as bytes: a dead-letter copy holds the producer's names as Redis held
    /// them. (Written by earlier builds with `String` names, which bincode stores alike.)
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// Approximate cap on the target stream's length (dead-letter streams are capped).
    pub maxlen: Option<u64>,
    /// Where the publisher fills in the elapsed milliseconds since this time (see
    /// `maestro_handlers::Output::elapsed_from_ms`).
    pub elapsed_from_ms: Option<u64>,
}

/// An outbox entry as written before `elapsed_from_ms` existed: a data dir upgraded with
/// entries still unpublished reads them as entries with no elapsed time to fill in.
#[derive(Deserialize)]
struct OutboxItemWithoutElapsed {
    seq: u64,
    index: u32,
    stream: String,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    maxlen: Option<u64>,
}

/// The start of an entry stored in pieces. The other forms start with their `seq` (eight
/// bytes, least significant first): these would spell a seq of 2^63 or more, which no log has.
const PIECES: &[u8; 8] = b"pieces\x01\xff";

/// An entry with fields in pieces, stored after [`PIECES`].
#[derive(Serialize, Deserialize)]
struct InPieces {
    seq: u64,
    index: u32,
    stream: String,
    fields: Vec<(Vec<u8>, Vec<Piece>)>,
    maxlen: Option<u64>,
    elapsed_from_ms: Option<u64>,
}

fn broken(e: impl std::fmt::Display) -> EngineError {
    EngineError::State(format!("outbox entry: {e}"))
}

impl OutboxItem {
    /// The stored form: in pieces when a field repeats a run of a value in `index`.
    pub(super) fn encode(&self, index: &Index<'_>) -> Result<Vec<u8>> {
        let pieces: Vec<Option<Vec<Piece>>> = self.fields.iter().map(|(_, value)| index.pieces(value)).collect();
        if pieces.iter().all(Option::is_none) {
            return codec::encode(self).map_err(broken);
        }
        let fields =
            self.fields.iter().zip(pieces).map(|((name, value), pieces)| {
                (name.clone(), pieces.unwrap_or_else(|| vec![Piece::Bytes(value.clone())]))
            });
        let stored = InPieces {
            seq: self.seq,
            index: self.index,
            stream: self.stream.clone(),
            fields: fields.collect(),
            maxlen: self.maxlen,
            elapsed_from_ms: self.elapsed_from_ms,
        };
        Ok([PIECES.as_slice(), &codec::encode(&stored).map_err(broken)?].concat())
    }

    /// An entry as stored, its runs read back from `files` (each file once per `read`).
    pub(super) fn load(bytes: &[u8], files: &ValueFiles, read: &mut HashMap<[u8; 32], Vec<u8>>) -> Result<OutboxItem> {
        let Some(stored) = bytes.strip_prefix(PIECES) else { return OutboxItem::decode(bytes) };
        let stored: InPieces = codec::decode(stored).map_err(broken)?;
        let mut fields = Vec::with_capacity(stored.fields.len());
        for (name, pieces) in stored.fields {
            let mut value = Vec::new();
            for piece in pieces {
                match piece {
                    Piece::Bytes(bytes) => value.extend_from_slice(&bytes),
                    Piece::Run { hash, start, end } => {
                        let file = match read.entry(hash) {
                            std::collections::hash_map::Entry::Occupied(file) => file.into_mut(),
                            std::collections::hash_map::Entry::Vacant(slot) => slot.insert(files.load_file(&hash)?),
                        };
                        let run = usize::try_from(start).ok().zip(usize::try_from(end).ok());
                        let run = run.and_then(|(start, end)| file.get(start..end));
                        let run = run.ok_or_else(|| broken(format!("its value file holds no bytes {start}..{end}")))?;
                        value.extend_from_slice(run);
                    }
                }
            }
            fields.push((name, value));
        }
        let InPieces { seq, index, stream, maxlen, elapsed_from_ms, .. } = stored;
        Ok(OutboxItem { seq, index, stream, fields, maxlen, elapsed_from_ms })
    }

    /// The value files a stored entry refers to.
    pub(super) fn references(bytes: &[u8]) -> Result<Vec<[u8; 32]>> {
        let Some(stored) = bytes.strip_prefix(PIECES) else { return Ok(Vec::new()) };
        let stored: InPieces = codec::decode(stored).map_err(broken)?;
        let runs = stored.fields.into_iter().flat_map(|(_, pieces)| pieces);
        Ok(runs.filter_map(|piece| if let Piece::Run { hash, .. } = piece { Some(hash) } else { None }).collect())
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<OutboxItem> {
        codec::decode(bytes)
            .or_else(|_| {
                codec::decode::<OutboxItemWithoutElapsed>(bytes).map(|old| OutboxItem {
                    seq: old.seq,
                    index: old.index,
                    stream: old.stream,
                    fields: old.fields,
                    maxlen: old.maxlen,
                    elapsed_from_ms: None,
                })
            })
            .map_err(broken)
    }
}

impl super::queue::Queued for OutboxItem {
    fn encode(&self) -> Result<Vec<u8>> {
        codec::encode(self).map_err(|e| EngineError::State(e.to_string()))
    }

    fn decode(bytes: &[u8]) -> Result<OutboxItem> {
        OutboxItem::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::keys::{OUTBOX, log_position};
    use crate::store::{Pending, Store, View};

    fn outbox_key(seq: u64, index: u32) -> Vec<u8> {
        [OUTBOX, log_position(seq, index).as_slice()].concat()
    }
    use crate::value_files::sweep_unreferenced;
    use maestro_handlers::StateView;

    fn answer(seq: u64, body: &[u8]) -> OutboxItem {
        let data = [b"{\"request_id\":\"r\",\"result\":{\"template_id\":\"t1\",".as_slice(), &body[1..], b",\"x\":1}"];
        OutboxItem {
            seq,
            index: 0,
            stream: "results".into(),
            fields: vec![(b"origin".to_vec(), b"maestro".to_vec()), (b"data".to_vec(), data.concat())],
            maxlen: None,
            elapsed_from_ms: Some(7),
        }
    }

    /// An answer that carries a body the handler read is stored as a reference to the body's
    /// file, published whole, and keeps the file from the sweep while it waits, even when the
    /// state no longer refers to it.
    #[test]
    fn an_answer_repeating_a_value_read_is_stored_by_reference_and_read_back_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(tmp.path().join("db")).open().unwrap();
        let files = ValueFiles::new(tmp.path().join("files"));
        let store = Store::open(&db, files.clone()).unwrap();
        let body: Vec<u8> = (0..20_000u32).flat_map(|i| format!("{i},").into_bytes()).take(20_000).collect();
        let mut pending = Pending::default();
        store.stage(&mut pending, "p", b"t", Some(body.clone())).unwrap();
        store.commit(pending).unwrap();
        // A handler reads the body and answers with it (and another answer without it).
        let mut pending = Pending::default();
        assert_eq!(View::new(&store, &pending, "p").get(b"t"), Some(body.clone()));
        let item = answer(2, &body);
        let plain = OutboxItem { seq: 3, ..answer(3, &vec![b'y'; 9_000]) };
        pending.publish(item.clone());
        pending.publish(plain.clone());
        store.commit(pending).unwrap();
        let stored = store.tree.get(outbox_key(2, 0)).unwrap().unwrap();
        assert!(stored.starts_with(PIECES) && stored.len() < 400, "{} bytes", stored.len());
        assert_eq!(store.tree.get(outbox_key(3, 0)).unwrap().unwrap(), codec::encode(&plain).unwrap());
        let read = |store: &Store| store.outbox(10).unwrap().into_iter().map(|(_, item)| item).collect::<Vec<_>>();
        assert_eq!(read(&store), [item.clone(), plain.clone()]);
        // The notes went with the commit: the next answer with the body is stored whole.
        let mut pending = Pending::default();
        pending.publish(answer(4, &body));
        store.commit(pending).unwrap();
        assert_eq!(store.tree.get(outbox_key(4, 0)).unwrap().unwrap(), codec::encode(&answer(4, &body)).unwrap());
        // The state lets go of the body; the waiting answer keeps its file.
        let mut pending = Pending::default();
        store.stage(&mut pending, "p", b"t", None).unwrap();
        store.commit(pending).unwrap();
        sweep_unreferenced(&files, &store).unwrap();
        assert_eq!(read(&store)[0], item);
        // Published and forgotten: the file goes with the next sweep.
        let keys: Vec<_> = store.outbox(10).unwrap().into_iter().map(|(key, _)| key).collect();
        store.remove_outbox(&keys, None).unwrap();
        sweep_unreferenced(&files, &store).unwrap();
        assert!(files.is_empty());
    }
}
