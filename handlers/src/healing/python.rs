//! Python source, read by a real Python parser (ruff's, as published by RustPython), never by
//! patterns. It was chosen over rustpython-parser for speed: 0.24 ms per 10 KB test file
//! (release build); with it and half the parses, heals on 10 KB files ran ten times faster
//! (BENCHMARKS.md). A healed file is an edit of a file that parsed, so only the top-level
//! statements the edit touches are parsed again ([`edited_def_names`]).
//!
//! The outline of a module (what a heal needs of a parse) is first asked of a recognizer of
//! the plain subset of Python test files are written in ([`grammar`]): one pass over the
//! tokens, no tree, several times faster than the full parse, which answers whatever the
//! subset does not hold, and every file that is not Python.

use rustpython_ruff_python_ast::Stmt;
use rustpython_ruff_python_parser::parse_module;
use std::collections::BTreeSet;

mod expression;
mod grammar;
mod lexer;
#[cfg(test)]
mod subset_tests;

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
    outline(source).map(|statements| statements.into_iter().flat_map(|s| s.names).collect())
}

/// One top-level statement of a module that parsed: where it starts (its decorators included)
/// and the functions it defines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopLevel {
    pub start: usize,
    pub names: BTreeSet<String>,
}

/// Where a statement starts (the parser's `Ranged` trait lives in a crate this one does not
/// name; every node keeps its range in a field).
fn start_of(stmt: &Stmt) -> usize {
    macro_rules! start {
        ($($variant:ident),*) => {
            match stmt {
                $(Stmt::$variant(node) => u32::from(node.range.start()) as usize,)*
            }
        };
    }
    start!(
        FunctionDef,
        ClassDef,
        Return,
        Delete,
        TypeAlias,
        Assign,
        AugAssign,
        AnnAssign,
        For,
        While,
        If,
        With,
        Match,
        Raise,
        Try,
        Assert,
        Import,
        ImportFrom,
        Global,
        Nonlocal,
        Expr,
        Pass,
        Break,
        Continue,
        IpyEscapeCommand
    )
}

/// The top-level statements of `source`, in order, or `None` when it does not parse.
pub fn outline(source: &str) -> Option<Vec<TopLevel>> {
    grammar::outline(source).or_else(|| full_outline(source))
}

/// [`outline`] by the full parser alone.
pub fn full_outline(source: &str) -> Option<Vec<TopLevel>> {
    let parsed = parse_module(source).ok()?;
    let statements = parsed.syntax().body.iter().map(|stmt| {
        let mut names = BTreeSet::new();
        collect(std::slice::from_ref(stmt), &mut names);
        TopLevel { start: start_of(stmt), names }
    });
    Some(statements.collect())
}

/// The function names of `edited`, an edit of `original` whose top-level statements are
/// `statements`, when `edited` parses; `None` when this cannot tell (then parse it whole).
///
/// Only the stretch of top-level statements that holds every changed byte is parsed, alone.
/// It is cut where a statement begins a line: there the lexer is at module level with no
/// bracket, string or indentation open, in the original and (the text before being the same)
/// in the edit. So when the stretch parses alone and ends a line, the text after it parses as
/// it did in the original, and the edit parses whole, with the names of the statements kept
/// and of the stretch. A stretch that does not parse alone might still parse in its context
/// (a bracket the text after closes): that answer is left to a parse of the whole.
pub fn edited_def_names(original: &str, statements: &[TopLevel], edited: &str) -> Option<BTreeSet<String>> {
    let (old, new) = (original.as_bytes(), edited.as_bytes());
    let same_start = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let room = old.len().min(new.len()) - same_start;
    let same_end = old.iter().rev().zip(new.iter().rev()).take(room).take_while(|(a, b)| a == b).count();
    let begins_line = |at: usize| at == 0 || matches!(old.get(at - 1), Some(b'\n' | b'\r'));
    let cuts = || statements.iter().map(|s| s.start).filter(|at| begins_line(*at));
    let from = cuts().take_while(|at| *at <= same_start).last().unwrap_or(0);
    let mut to = cuts().find(|at| *at >= old.len() - same_end).unwrap_or(old.len());
    // The stretch in the edit ends where the unchanged text after it starts; a decorator
    // added before a statement is matched as if added after the one before, and belongs with
    // the statement after it.
    let stretch = loop {
        let stretch = edited.get(from..new.len() - (old.len() - to))?;
        let last_line = stretch.trim_end().rsplit(['\n', '\r']).next().unwrap_or_default();
        if to == old.len() || !last_line.trim_start().starts_with('@') {
            break stretch;
        }
        to = cuts().find(|at| *at > to).unwrap_or(old.len());
    };
    if from == 0 && to == old.len() {
        return None;
    }
    if to < old.len() && !stretch.ends_with(['\n', '\r']) {
        return None;
    }
    let mut names = def_names(stretch)?;
    let kept = statements.iter().filter(|s| s.start < from || s.start >= to);
    names.extend(kept.flat_map(|s| s.names.iter().cloned()));
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer of a parse of the whole edit, by the shortcut when it gives one.
    fn by_stretch(original: &str, edited: &str) -> Option<BTreeSet<String>> {
        let statements = outline(original).unwrap();
        edited_def_names(original, &statements, edited)
    }

    const ORIGINAL: &str = "\"\"\"Doc.\"\"\"\nimport os\nimport pytest\n\nX = (1,\n     2)\n\n\n@pytest.fixture\ndef client():\n    return 1\n\n\ndef test_a(client):\n    s = '''\ndef inside():\n'''\n    assert client == 1\n\n\nclass TestB:\n    def test_b(self):\n        def helper():\n            pass\n        assert True\n\nY = 1; Z = 2\n\n\nasync def test_c():\n    assert X\n";

    /// Every edit here: the shortcut, when it answers, answers what a parse of the whole does,
    /// and it answers the plain edits a strategy makes.
    #[test]
    fn a_stretch_parsed_alone_answers_as_the_whole_edit() {
        assert!(parses(ORIGINAL));
        let edits: Vec<(String, bool)> = vec![
            // Plain edits: one statement changed, a line added, decorators added.
            (ORIGINAL.replace("assert client == 1", "assert client == pytest.approx(1)"), true),
            (ORIGINAL.replace("import pytest\n", "import pytest\nimport time\n"), true),
            (ORIGINAL.replace("async def test_c", "@pytest.mark.flaky\nasync def test_c"), true),
            (ORIGINAL.replace("def test_a(client):\n", "@pytest.mark.flaky\ndef test_a(client):\n"), true),
            (ORIGINAL.replace("        def helper", "        def renamed"), true),
            (ORIGINAL.replace("Y = 1; Z = 2", "Y = 1; Z = 3"), true),
            (format!("{ORIGINAL}\ndef test_d():\n    pass\n"), true),
            (ORIGINAL.replace("X = (1,\n     2)\n", ""), true),
            // Edits that break the file, inside a statement or between them.
            (ORIGINAL.replace("def test_a(client):", "def test_a(client)"), false),
            (ORIGINAL.replace("class TestB:", "class TestB"), false),
            (ORIGINAL.replace("\n\nclass TestB:", "\n  \nclass TestB(:"), false),
            (ORIGINAL.replace("    assert client == 1\n", "    assert client == (1\n"), false),
            (ORIGINAL.replace("Y = 1; Z = 2", "Y = 1; Z ="), false),
            // A statement after a semicolon starts no line: the edit is judged from the line.
            (ORIGINAL.replace("Z = 2", "def f(): pass"), false),
            // Two statements joined: what is left before the next one parses, but not the line.
            (ORIGINAL.replace("import os\n", "import os"), false),
            (ORIGINAL.replace("'''\n    assert client", "\n    assert client"), false),
            // Edits only the context can judge: an indented line after a body continues it, a
            // bracket opened in the stretch closes after it, a line joins the next one.
            (ORIGINAL.replace("\n\n\ndef test_a", "\n    y = 2\n\n\ndef test_a"), true),
            (ORIGINAL.replace("class TestB:\n", "W = [\nclass TestB:\n"), false),
            (ORIGINAL.replace("    assert client == 1\n\n\n", "    assert client == (1\n\n\n)\n"), true),
            (ORIGINAL.replace("assert X\n", "assert X"), true),
            (ORIGINAL.replace("\"\"\"Doc.\"\"\"\n", "\"\"\"Doc.\n"), false),
            (ORIGINAL.replace("Y = 1; Z = 2\n", "Y = 1; Z = 2 \\\n"), true),
            (ORIGINAL.replace('\n', "\r\n").replace("assert True", "assert False"), true),
            (ORIGINAL.replace('\n', "\r").replace("assert True", "assert (False"), false),
        ];
        let mut answered = 0;
        for (edited, parsed) in &edits {
            let whole = def_names(edited);
            assert_eq!(whole.is_some(), *parsed, "{edited}");
            let original = if edited.contains('\r') {
                edited.replace("False", "True").replace("(True", "True")
            } else {
                ORIGINAL.to_string()
            };
            if let Some(names) = by_stretch(&original, edited) {
                assert_eq!(Some(names), whole, "the shortcut answered wrong for:\n{edited}");
                answered += 1;
            }
        }
        assert!(answered >= 9, "the shortcut answered only {answered} edits");
        // The plain edits are answered by the shortcut, with every name.
        let one_line = ORIGINAL.replace("assert client == 1", "assert client == pytest.approx(1)");
        let names = by_stretch(ORIGINAL, &one_line).unwrap();
        assert_eq!(names, def_names(ORIGINAL).unwrap());
        assert!(!names.contains("inside") && names.contains("helper") && names.contains("test_c"));
    }

    /// Every line of a file deleted, doubled, or given a neighbour that opens, closes,
    /// indents or decorates: wherever the shortcut answers, it answers as the whole parse.
    #[test]
    fn every_one_line_edit_is_judged_as_the_whole_file_would_be() {
        let lines: Vec<&str> = ORIGINAL.lines().collect();
        let inserts = ["    x = (", ")", "    y = 1", "@decorator", "'''", "def f():", "class C:", "z = 1", ""];
        let (mut edits, mut answered) = (0, 0);
        for at in 0..=lines.len() {
            let mut variants: Vec<Vec<&str>> = Vec::new();
            if at < lines.len() {
                variants.push([&lines[..at], &lines[at + 1..]].concat());
                variants.push([&lines[..=at], &lines[at..]].concat());
            }
            for insert in inserts {
                variants.push([&lines[..at], &[insert], &lines[at..]].concat());
            }
            for variant in variants {
                let edited = variant.join("\n") + "\n";
                edits += 1;
                if let Some(names) = by_stretch(ORIGINAL, &edited) {
                    assert_eq!(Some(names), def_names(&edited), "the shortcut answered wrong for:\n{edited}");
                    answered += 1;
                }
            }
        }
        assert!(answered * 4 > edits, "the shortcut answered {answered} of {edits} edits");
    }
}
