//! Runs of value files inside larger byte strings. An answer often carries a large value the
//! handler read (a retrieve answers with the template's body): its outbox entry then stores a
//! reference to that run of the value's file instead of a second copy, and the publisher reads
//! the run back. The values a handler read since the last commit are noted ([`Noted`]); an
//! outbox field is searched for them by content-defined anchors (a rolling hash over 64-byte
//! windows, as content-defined chunking finds cut points), so the search costs one pass over
//! the field however many values were read. Every run is checked byte for byte before it is
//! used, so a hash collision can cost a reference, never a wrong byte.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Shorter runs are kept as bytes: a reference and its piece cost about 60 bytes.
pub const MIN_RUN: usize = 1024;

/// Bytes of values noted between two commits at most (the rest are not shared).
const NOTED_BYTES: usize = 32 << 20;

/// The anchors of a noted value that are indexed (a run found from one is extended both ways).
const ANCHORS_PER_VALUE: usize = 4;

/// The window of the rolling hash: its value at a byte depends on exactly the 64 bytes ending
/// there, so an anchor is where it is in any string that holds those bytes.
const WINDOW: usize = 64;

/// One number per byte value for the rolling hash (splitmix64, fixed).
const GEAR: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut state: u64 = 0x6d61_6573_7472_6f21;
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
};

/// Positions (the index of a window's last byte) and hashes of the anchors of `bytes`: where
/// the top 8 bits of the rolling hash are zero, one position in 256 on average.
fn anchors(bytes: &[u8]) -> impl Iterator<Item = (usize, u64)> + '_ {
    let mut hash = 0u64;
    bytes.iter().enumerate().filter_map(move |(at, byte)| {
        hash = (hash << 1).wrapping_add(GEAR[*byte as usize]);
        (at + 1 >= WINDOW && hash >> 56 == 0).then_some((at, hash))
    })
}

/// A piece of a stored byte string: bytes, or a run of a value file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Piece {
    Bytes(Vec<u8>),
    Run { hash: [u8; 32], start: u64, end: u64 },
}

/// The large values read since the last commit, by hash.
#[derive(Debug, Default)]
pub struct Noted {
    values: HashMap<[u8; 32], Arc<[u8]>>,
    bytes: usize,
}

impl Noted {
    pub(super) fn note(&mut self, hash: [u8; 32], value: &[u8]) {
        if value.len() < MIN_RUN || self.bytes + value.len() > NOTED_BYTES || self.values.contains_key(&hash) {
            return;
        }
        self.bytes += value.len();
        self.values.insert(hash, value.into());
    }

    /// The noted values by their first anchors, for [`Index::pieces`]. Values that start
    /// alike (templates made from one skeleton) share anchors: each anchor lists them all.
    pub fn index(&self) -> Index<'_> {
        let mut index: HashMap<u64, Vec<Anchored<'_>>> = HashMap::new();
        for (hash, value) in &self.values {
            for (at, anchor) in anchors(value).take(ANCHORS_PER_VALUE) {
                index.entry(anchor).or_default().push((hash, value, at));
            }
        }
        Index { anchors: index }
    }
}

/// A noted value's hash, bytes, and an anchor's position in them.
type Anchored<'a> = (&'a [u8; 32], &'a [u8], usize);

/// Anchors of noted values: the rolling hash at an anchor, and where it is in which values.
#[derive(Debug)]
pub struct Index<'a> {
    anchors: HashMap<u64, Vec<Anchored<'a>>>,
}

impl Index<'_> {
    /// `field` as bytes and runs of noted values, when it holds a run of [`MIN_RUN`] bytes or
    /// more of one; `None` when it holds none.
    pub fn pieces(&self, field: &[u8]) -> Option<Vec<Piece>> {
        if self.anchors.is_empty() || field.len() < MIN_RUN {
            return None;
        }
        let mut pieces = Vec::new();
        // Bytes before `done` are in `pieces`; the search goes on from `from`.
        let (mut done, mut from) = (0, 0);
        while let Some((start, end, hash, value_start)) = self.next_run(field, done, from) {
            if end - start < MIN_RUN {
                from = end.max(from + 1);
                continue;
            }
            if start > done {
                pieces.push(Piece::Bytes(field[done..start].to_vec()));
            }
            let value_end = value_start + (end - start);
            pieces.push(Piece::Run { hash: *hash, start: value_start as u64, end: value_end as u64 });
            (done, from) = (end, end);
        }
        if pieces.is_empty() {
            return None;
        }
        if done < field.len() {
            pieces.push(Piece::Bytes(field[done..].to_vec()));
        }
        Some(pieces)
    }

    /// The first run of a noted value found from an anchor at or after `from`, extended back
    /// to `done` at most: (start, end) in `field`, the value's hash and where the run starts
    /// in it.
    fn next_run(&self, field: &[u8], done: usize, from: usize) -> Option<(usize, usize, &[u8; 32], usize)> {
        for (at, anchor) in anchors(&field[from..]) {
            let at = from + at;
            let Some(candidates) = self.anchors.get(&anchor) else { continue };
            // The longest run of a value with this anchor, as far as both agree each way from
            // it; a run shorter than the window back is another window with the same hash.
            let runs = candidates.iter().filter_map(|&(hash, value, value_at)| {
                let back = field[done..=at].iter().rev().zip(value[..=value_at].iter().rev());
                let back = back.take_while(|(a, b)| a == b).count();
                let ahead = field[at + 1..].iter().zip(&value[value_at + 1..]).take_while(|(a, b)| a == b).count();
                (back >= WINDOW).then_some((at + 1 - back, at + 1 + ahead, hash, value_at + 1 - back))
            });
            if let Some(run) = runs.max_by_key(|(start, end, ..)| end - start) {
                return Some(run);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i / 7) as u8).collect()
    }

    fn join(pieces: &[Piece], values: &HashMap<[u8; 32], Vec<u8>>) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Bytes(bytes) => out.extend_from_slice(bytes),
                Piece::Run { hash, start, end } => out.extend_from_slice(&values[hash][*start as usize..*end as usize]),
            }
        }
        out
    }

    #[test]
    fn a_field_that_repeats_a_noted_value_is_stored_as_bytes_and_runs() {
        let (body, other) = (value(1, 20_000), value(2, 9_000));
        let hashes = [*blake3::hash(&body).as_bytes(), *blake3::hash(&other).as_bytes()];
        let mut noted = Noted::default();
        noted.note(hashes[0], &body);
        noted.note(hashes[1], &other);
        let values = HashMap::from([(hashes[0], body.clone()), (hashes[1], other.clone())]);
        let index = noted.index();
        // An answer: a head, the body but its first byte, a tail; then one with both values.
        let answer = [b"{\"request_id\":\"r1\",\"result\":{".as_slice(), &body[1..], b",\"error\":null}"].concat();
        let pieces = index.pieces(&answer).unwrap();
        assert_eq!(join(&pieces, &values), answer);
        let runs: Vec<_> = pieces.iter().filter(|p| matches!(p, Piece::Run { .. })).collect();
        assert_eq!(runs, [&Piece::Run { hash: hashes[0], start: 1, end: body.len() as u64 }]);
        let both = [&other[..5_000], b"--", &body[100..], b"--"].concat();
        let pieces = index.pieces(&both).unwrap();
        assert_eq!(join(&pieces, &values), both);
        assert_eq!(pieces.iter().filter(|p| matches!(p, Piece::Run { .. })).count(), 2, "{pieces:?}");
        // Values made from one skeleton share their first anchors: each is found whole.
        let skeleton = value(9, 3_000);
        let alike: Vec<Vec<u8>> = (0..3).map(|i| [&skeleton[..], &value(10 + i, 8_000)].concat()).collect();
        let mut noted = Noted::default();
        for v in &alike {
            noted.note(*blake3::hash(v).as_bytes(), v);
        }
        let index_alike = noted.index();
        let values_alike: HashMap<_, _> = alike.iter().map(|v| (*blake3::hash(v).as_bytes(), v.clone())).collect();
        for v in &alike {
            let answer = [b"head".as_slice(), &v[1..], b"tail"].concat();
            let pieces = index_alike.pieces(&answer).unwrap();
            assert_eq!(join(&pieces, &values_alike), answer);
            let run = Piece::Run { hash: *blake3::hash(v).as_bytes(), start: 1, end: v.len() as u64 };
            assert_eq!(pieces[1], run, "{pieces:?}");
        }
        // Nothing of a noted value, or too little of it: no pieces.
        assert_eq!(index.pieces(&value(3, 30_000)), None);
        assert_eq!(index.pieces(&[&body[..MIN_RUN - 1], &value(3, 5_000)].concat()), None);
        assert_eq!(Noted::default().index().pieces(&answer), None);
    }
}
