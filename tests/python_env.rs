//! The tests' Python environment: reused while complete, rebuilt when its stamp is missing or
//! stale (a build killed mid-install), and a clear one-line error when it cannot be built.
//! Runs on a requirements file without packages, so it needs no registry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::python::{ensure_env, requirements};

const STAMP: &str = "maestro-requirements.stamp";

#[test]
fn a_half_built_or_stale_environment_is_rebuilt_and_a_complete_one_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let reqs = tmp.path().join("requirements.txt");
    std::fs::write(&reqs, "# no packages\n").unwrap();
    let dir = tmp.path().join("env");
    let marker = dir.join("planted");

    let env = ensure_env("python3", &reqs, &dir).unwrap_or_else(|e| panic!("{e}"));
    let ran =
        std::process::Command::new(env.bin("python")).args(["-c", "import sys; print(sys.prefix)"]).output().unwrap();
    assert!(ran.status.success());
    let prefix = String::from_utf8(ran.stdout).unwrap();
    assert_eq!(
        std::fs::canonicalize(prefix.trim()).unwrap(),
        std::fs::canonicalize(&dir).unwrap(),
        "the venv's own python"
    );

    // Complete and current: reused as it is.
    std::fs::write(&marker, "kept").unwrap();
    ensure_env("python3", &reqs, &dir).unwrap();
    assert!(marker.exists(), "a complete environment must be reused, not rebuilt");

    // Killed mid-install: no stamp. Rebuilt from scratch.
    std::fs::remove_file(dir.join(STAMP)).unwrap();
    ensure_env("python3", &reqs, &dir).unwrap();
    assert!(!marker.exists(), "an environment without a stamp must be rebuilt");
    assert!(dir.join(STAMP).exists() && env.bin("python").exists());

    // Built from other requirements: stale stamp. Rebuilt.
    std::fs::write(&marker, "stale").unwrap();
    std::fs::write(&reqs, "# no packages, changed\n").unwrap();
    ensure_env("python3", &reqs, &dir).unwrap();
    assert!(!marker.exists(), "an environment built from other requirements must be rebuilt");
}

#[test]
fn a_missing_interpreter_is_one_clear_line_with_the_command_that_provides_it() {
    let tmp = tempfile::tempdir().unwrap();
    let err = ensure_env("python3-that-is-not-there", &requirements(), &tmp.path().join("env")).unwrap_err();
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(err.contains("python3-that-is-not-there not found") && err.contains("apt-get install -y python3"), "{err}");
}

/// Parallel callers share one build: the others wait on the lock, then find the stamp. The
/// interpreter is a wrapper that counts the builds and takes its time, so that unlocked
/// callers would overlap.
#[test]
fn concurrent_callers_build_once() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let reqs = tmp.path().join("requirements.txt");
    std::fs::write(&reqs, "# no packages\n").unwrap();
    let builds = tmp.path().join("builds");
    let wrapper = tmp.path().join("slow-python3");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\necho build >> '{}'\nsleep 1\nexec python3 \"$@\"\n", builds.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("env");
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (reqs, dir, wrapper) = (reqs.clone(), dir.clone(), wrapper.clone());
            std::thread::spawn(move || ensure_env(wrapper.to_str().unwrap(), &reqs, &dir).map(|_| ()))
        })
        .collect();
    for caller in callers {
        caller.join().unwrap().unwrap();
    }
    assert_eq!(std::fs::read_to_string(&builds).unwrap().lines().count(), 1, "one build for four callers");
    assert!(dir.join(STAMP).exists() && dir.join("bin/python").exists(), "one complete environment");
}
