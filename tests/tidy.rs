//! Tidy tests: conventions that would otherwise rot, as failing tests.
//! `handlers` and `schemas` stay pure: no I/O crate, no clock, no randomness, no filesystem.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

/// Crates the pure crates may depend on. Anything else needs a reason and a change here.
const PURE_DEPENDENCIES: [&str; 14] = [
    "maestro-schemas",
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

#[test]
fn the_tidy_check_catches_what_it_claims_to() {
    let manifest = "[package]\nname = \"x\"\n\n[dependencies]\nserde.workspace = true\ntokio = \"1\"\n\n[dev-dependencies]\nproptest = \"1\"\n";
    assert_eq!(dependencies(manifest), vec!["serde", "tokio"]);
    let code = "let spec_has = spec.redis_enabled; use tokio::time;";
    let hits: Vec<_> = FORBIDDEN.iter().filter(|p| code.contains(*p)).collect();
    assert_eq!(hits, vec![&"tokio::"]);
}
