//! Fuzzes the one decode entry point with arbitrary entries of every stream role.
//! Input framing: one byte picks the role; then (name length, name, value length, value)
//! groups, lengths as one byte each, until the input runs out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maestro_schemas::envelope::Limits;
use maestro_schemas::{EntryId, Origin, StreamSet, decode};

fuzz_target!(|data: &[u8]| {
    let Some((&role, mut rest)) = data.split_first() else { return };
    let streams = StreamSet {
        automation_errors: Some("errors".into()),
        automation_validation: Some("validation".into()),
        ..StreamSet::default()
    };
    let all = streams.all();
    let (role, stream) = all[role as usize % all.len()];
    let mut fields = Vec::new();
    while let [name_len, tail @ ..] = rest {
        let (name, tail) = tail.split_at((*name_len as usize).min(tail.len()));
        let Some((&value_len, tail)) = tail.split_first() else { break };
        let (value, tail) = tail.split_at((value_len as usize).min(tail.len()));
        fields.push((name.to_vec(), value.to_vec()));
        rest = tail;
    }
    let origin = Origin { stream, entry: EntryId { ms: 1, seq: 0 } };
    let _ = decode(role, origin, &fields, &Limits::default());
});
