//! Python source, read by a real Python parser (ruff's, as published by RustPython), never by
//! patterns. It was chosen over rustpython-parser for speed: 0.24 ms per 10 KB test file
//! (release build); with it and half the parses, heals on 10 KB files ran ten times faster
//! (BENCHMARKS.md).

use rustpython_ruff_python_ast::Stmt;
use rustpython_ruff_python_parser::parse_module;
use std::collections::BTreeSet;

/// Whether `source` parses as a Python module.
pub fn parses(source: &str) -> bool {
    parse_module(source).is_ok()
}

/// The byte offset where the parser found the fault, when `source` does not parse.
pub fn error_offset(source: &str) -> Option<usize> {
    parse_module(source).err().map(|e| u32::from(e.location.start()) as usize)
}

fn collect(body: &[Stmt], names: &mut BTreeSet<String>) {
    for stmt in body {
        match stmt {
            Stmt::FunctionDef(f) => {
                names.insert(f.name.to_string());
                collect(&f.body, names);
            }
            Stmt::ClassDef(c) => collect(&c.body, names),
            _ => {}
        }
    }
}

/// The names of every function defined in `source` (module level, in classes, nested, async
/// or not), or `None` when it does not parse: one parse answers both questions.
pub fn def_names(source: &str) -> Option<BTreeSet<String>> {
    let parsed = parse_module(source).ok()?;
    let mut names = BTreeSet::new();
    collect(&parsed.syntax().body, &mut names);
    Some(names)
}
