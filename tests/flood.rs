//! The malformed flood (S5), small: bad entries of every kind on every stream beside good
//! template requests. What is not a timing is checked here (the latencies are `maestro bench
//! flood`'s): the engine stays up, every good request is answered exactly once, every bad entry
//! is recorded as rejected and acknowledged, and the dead-letter streams stay capped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use maestro::flood::{FloodArgs, flood};
use std::path::Path;

#[test]
fn a_flood_of_malformed_entries_beside_good_traffic_is_survived_and_capped() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let args = FloodArgs { rate: 40, bad_rate: 1_500, seconds: 3, dead_letter_maxlen: 200 };
    let figures = flood(Path::new(env!("CARGO_BIN_EXE_maestro")), &dir, &args).unwrap();
    assert!(figures.engine_alive, "the engine died under the flood");
    assert!(figures.bad_sent >= 3_000, "only {} bad entries were sent", figures.bad_sent);
    for phase in [&figures.clean, &figures.flooded] {
        assert_eq!(phase.answered, phase.sent, "good requests unanswered");
    }
    let repeated: Vec<_> = figures.answers.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "answered more than once: {repeated:?}");
    // XADD MAXLEN ~ trims whole stream nodes (100 entries each by default), so a dead-letter
    // stream holds at most the cap plus one node.
    for (stream, len) in &figures.dead_letters {
        assert!(*len <= args.dead_letter_maxlen + 100, "{stream} holds {len} entries");
    }
    assert!(figures.dead_letters.iter().any(|(_, n)| *n > 0), "nothing was dead-lettered");
    let rejected = export(&dir).iter().filter(|r| r["status"] == "rejected").count() as u64;
    assert_eq!(rejected, figures.bad_sent, "every bad entry is recorded as rejected");
}
