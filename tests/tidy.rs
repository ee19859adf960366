//! Tidy tests: conventions that would otherwise rot, as failing tests.
//! `handlers` and `schemas` stay pure: no I/O crate, no clock, no randomness, no filesystem.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

/// Crates the pure crates may depend on. Anything else needs a reason and a change here.
const PURE_DEPENDENCIES: [&str; 15] = [
    "maestro-schemas",
    "hex",
    "serde",
    "serde_json",
    "bincode",
    "blake3",
    "crc32fast",
    "thiserror",
    "prost",
    "semver",
    "regex-syntax",
    "sha1_smol",
    "rustpython-ruff_python_parser",
    "rustpython-ruff_python_ast",
    // Kubernetes object types: plain data with serde, no client.
    "k8s-openapi",
];

/// Source patterns that mean I/O, a clock, randomness or the environment. Crate paths are
/// matched with their `::`, so that a field such as `redis_enabled` is no match.
const FORBIDDEN: [&str; 14] = [
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "std::thread",
    "SystemTime",
    "Instant",
    "tokio::",
    "redis::",
    "sled::",
    "git2::",
    "kube::",
    "rand::",
    "std::io::stdin",
];

fn dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && let Some((name, _)) = line.split_once(['=', '.']) {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                out.push(name.to_string());
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn handlers_and_schemas_depend_on_no_io_crate_and_use_no_clock_or_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut violations = Vec::new();
    for krate in ["handlers", "schemas"] {
        let manifest = std::fs::read_to_string(root.join(krate).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{krate}/Cargo.toml: {e}"));
        let deps = dependencies(&manifest);
        assert!(!deps.is_empty(), "{krate}: no [dependencies] found; the tidy parser is broken");
        for dep in deps {
            if !PURE_DEPENDENCIES.contains(&dep.as_str()) {
                violations.push(format!("{krate}/Cargo.toml depends on {dep}"));
            }
        }
        let mut files = Vec::new();
        rust_files(&root.join(krate).join("src"), &mut files);
        assert!(!files.is_empty());
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for pattern in FORBIDDEN {
                    if code.contains(pattern) {
                        violations.push(format!("{}:{}: uses {pattern}", file.display(), number + 1));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "pure crates must stay pure:\n{}", violations.join("\n"));
}

/// What only a domain names: the domains' handler modules, the crates of their effects, and the
/// domains' stream roles (fields of `StreamSet`).
const DOMAIN_NAMES: [&str; 10] = [
    "maestro_handlers::templates",
    "maestro_handlers::healing",
    "maestro_handlers::execution",
    "maestro_handlers::stream_stats",
    "git2::",
    "kube::",
    "k8s_openapi",
    ".k8s_",
    ".templates_",
    ".automation_",
];

/// The domain names a non-test line of `text` holds, with its line number.
fn domain_names(text: &str) -> Vec<(usize, &'static str)> {
    let code = text.lines().take_while(|line| !line.trim_start().starts_with("#[cfg(test)]"));
    let mut hits = Vec::new();
    for (number, line) in code.enumerate() {
        let line = line.split("//").next().unwrap_or_default();
        for name in DOMAIN_NAMES.iter().filter(|n| line.contains(*n)) {
            hits.push((number + 1, *name));
        }
    }
    hits
}

#[test]
fn the_engine_names_no_domain() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("engine/Cargo.toml")).unwrap();
    let crates = dependencies(&manifest);
    for effect_crate in ["git2", "kube", "k8s-openapi"] {
        assert!(!crates.iter().any(|c| c == effect_crate), "the engine depends on {effect_crate}: {crates:?}");
    }
    let mut files = Vec::new();
    rust_files(&root.join("engine/src"), &mut files);
    assert!(files.len() > 20, "found only {} engine files; the walk is broken", files.len());
    let mut violations = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, name) in domain_names(&text) {
            violations.push(format!("{}:{line}: {name}", file.display()));
        }
    }
    assert!(violations.is_empty(), "the engine names a domain:\n{}", violations.join("\n"));
}

/// The log and the store never name each other (the data dir opens sled and hands out both),
/// and the Redis source publishes a neutral type, not the store's outbox entry.
#[test]
fn the_log_the_store_and_the_source_stay_apart() {
    let engine = Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/src");
    let mut store_files = vec![engine.join("store.rs")];
    rust_files(&engine.join("store"), &mut store_files);
    let mut checks: Vec<(std::path::PathBuf, &str)> =
        vec![(engine.join("log.rs"), "crate::store"), (engine.join("source.rs"), "crate::store")];
    checks.extend(store_files.into_iter().map(|file| (file, "crate::log")));
    assert!(checks.len() > 5, "the walk is broken: {checks:?}");
    let mut violations = Vec::new();
    for (file, name) in checks {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.lines().take_while(|line| !line.trim_start().starts_with("#[cfg(test)]"));
        for (number, line) in code.enumerate() {
            if line.split("//").next().unwrap_or_default().contains(name) {
                violations.push(format!("{}:{}: {name}", file.display(), number + 1));
            }
        }
    }
    assert!(violations.is_empty(), "the log, the store and the source name each other:\n{}", violations.join("\n"));
}

#[test]
fn the_tidy_check_catches_what_it_claims_to() {
    let engine_code = "use maestro_handlers::Intent;\nuse maestro_handlers::templates::history::Commit; // why\n// git2:: in a comment\n#[cfg(test)]\nuse kube::Api;\n";
    assert_eq!(domain_names(engine_code), vec![(2, "maestro_handlers::templates")]);
    assert_eq!(domain_names("xadd(&self.config.streams.k8s_status)"), vec![(1, ".k8s_")]);
    let manifest = "[package]\nname = \"x\"\n\n[dependencies]\nserde.workspace = true\ntokio = \"1\"\n\n[dev-dependencies]\nproptest = \"1\"\n";
    assert_eq!(dependencies(manifest), vec!["serde", "tokio"]);
    let code = "let spec_has = spec.redis_enabled; use tokio::time;";
    let hits: Vec<_> = FORBIDDEN.iter().filter(|p| code.contains(*p)).collect();
    assert_eq!(hits, vec![&"tokio::"]);
}

/// Non-test lines a source file may have (lines before its first `#[cfg(test)]`).
const MAX_SOURCE_LINES: usize = 600;

/// The lines of `text` before its test module, if it has one.
fn non_test_lines(text: &str) -> usize {
    text.lines().take_while(|line| !line.trim_start().starts_with("#[cfg(test)]")).count()
}

/// Whether a comment line narrates when it was written (a session or issue number) instead of why.
fn history_marker(line: &str) -> Option<&'static str> {
    let comment = line.split_once("//").map(|(_, c)| c.to_lowercase())?;
    let words: Vec<&str> = comment.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    for pair in words.windows(2) {
        let number = pair[1].chars().all(|c| c.is_ascii_digit());
        match pair[0] {
            "session" if number => return Some("session N"),
            "issue" if number => return Some("issue N"),
            _ => {}
        }
    }
    None
}

/// Every `.rs` file of the workspace's source trees (not `target/`).
fn workspace_sources() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "src",
        "schemas/src",
        "handlers/src",
        "engine/src",
        "effects/src",
        "replay/src",
        "devtools/src",
        "tests",
        "benches",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    files
}

#[test]
fn source_files_stay_small_and_comments_say_why_not_when() {
    let mut violations = Vec::new();
    let files = workspace_sources();
    assert!(files.len() > 50, "found only {} source files; the walk is broken", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let lines = non_test_lines(&text);
        let is_test = file.components().any(|c| c.as_os_str() == "tests");
        if !is_test && lines > MAX_SOURCE_LINES {
            violations.push(format!("{}: {lines} non-test lines (at most {MAX_SOURCE_LINES})", file.display()));
        }
        for (number, line) in text.lines().enumerate() {
            if let Some(marker) = history_marker(line) {
                violations.push(format!("{}:{}: a history marker ({marker}) in a comment", file.display(), number + 1));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_size_and_history_checks_catch_what_they_claim_to() {
    // Built at run time, so that this file's own source holds no marker.
    let issue = format!("//! The templates domain ({} {}): the registry", ["iss", "ue"].concat(), 4);
    let session = format!("    // measured in {} {}, three runs", ["Sess", "ion"].concat(), 12);
    assert_eq!(history_marker(&issue), Some("issue N"));
    assert_eq!(history_marker(&session), Some("session N"));
    assert_eq!(history_marker("let session = 4; // a session of the registry"), None);
    assert_eq!(history_marker("let issue_4 = 1;"), None);
    assert_eq!(non_test_lines("a\nb\n#[cfg(test)]\nmod tests {}\n"), 2);
    assert_eq!(non_test_lines("a\nb\nc\n"), 3);
}
