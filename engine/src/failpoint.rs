//! Crash points for the failpoint matrix (R2 in the reliability spec).
//!
//! A crash point aborts the process where it stands: no unwinding, no destructors, no flush of
//! anything the engine buffered, as a `kill -9` at exactly that line would. The points are named
//! after the step of the batch cycle they interrupt, and compiled in only with the
//! `failpoints` feature, which the workspace's test builds turn on (the binary's dev-dependency
//! on this crate) and release builds do not. `FAILPOINTS="after-append=2*off->return"` aborts
//! at the third pass through `after-append` (the `fail` crate's action syntax).

/// Aborts the process when the point `name` is configured to fire; otherwise does nothing.
pub fn crash_point(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| abort_at(name));
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Like [`crash_point`], running `first` before the abort: for a crash that comes after
/// something the engine does not wait for (sled's background flush of a commit) has happened.
pub fn crash_point_after(name: &str, first: impl FnOnce()) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| {
        first();
        abort_at(name)
    });
    #[cfg(not(feature = "failpoints"))]
    let _ = (name, first);
}

/// A switch: true where the point `name` is configured to fire. It takes a rarely taken path
/// on purpose instead of aborting, so that a crash point further on can interrupt that path.
pub fn switched(name: &str) -> bool {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| true);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
    false
}

#[cfg(feature = "failpoints")]
fn abort_at(name: &str) {
    tracing::error!(failpoint = name, "failpoint fired: aborting the process");
    std::process::abort()
}

/// Names every crash point, so a test (and a typo in `FAILPOINTS`) can be checked against them.
pub const CRASH_POINTS: [&str; 14] = [
    "after-append",
    "after-flush",
    "after-flush-written",
    "mid-batch",
    "after-publish",
    "before-ack",
    "during-checkpoint",
    "during-catch-up",
    "seal-after-write",
    "seal-after-rename",
    "seal-after-index",
    "router-before-ack",
    "store-move-copied",
    "store-move-renamed",
];

/// Names every switch (see [`switched`]): `write-before-publish` writes each batch's state
/// with its outputs in the outbox before publishing them, as when something older waits.
pub const SWITCHES: [&str; 1] = ["write-before-publish"];

/// Configures the crash points from the `FAILPOINTS` environment variable
/// (`name=actions;name=actions`). Unset is fine; set in a build without the points, or naming
/// a point that does not exist, is an error: a failpoint test must never pass because its
/// point silently did nothing.
pub fn configure_from_env() -> Result<(), String> {
    let Ok(spec) = std::env::var("FAILPOINTS") else {
        return Ok(());
    };
    for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, actions) =
            item.split_once('=').ok_or_else(|| format!("FAILPOINTS: `{item}` is not name=actions"))?;
        if !CRASH_POINTS.contains(&name) && !SWITCHES.contains(&name) {
            return Err(format!(
                "FAILPOINTS: no crash point `{name}` (there are: {}; switches: {})",
                CRASH_POINTS.join(", "),
                SWITCHES.join(", ")
            ));
        }
        configure(name, actions)?;
    }
    Ok(())
}

#[cfg(feature = "failpoints")]
fn configure(name: &str, actions: &str) -> Result<(), String> {
    fail::cfg(name, actions).map_err(|e| format!("FAILPOINTS: {name}: {e}"))
}

#[cfg(not(feature = "failpoints"))]
fn configure(name: &str, _actions: &str) -> Result<(), String> {
    Err(format!("FAILPOINTS names `{name}`, but this build has no crash points (only test builds have them)"))
}
