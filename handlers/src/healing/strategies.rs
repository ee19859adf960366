//! The seven repair strategies (domain.md section 3), each a pure text transform of a test
//! file's source. A strategy that finds nothing to change returns `None`.

use super::classify::FailureClass;
use super::python;

/// A repair strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Strategy {
    DependencyFix,
    AssertionUpdate,
    TimingAdjustment,
    FlakyTestStabilization,
    EnvironmentHealing,
    ApiContractAdaptation,
    SyntaxRepair,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::DependencyFix => "dependency_fix",
            Strategy::AssertionUpdate => "assertion_update",
            Strategy::TimingAdjustment => "timing_adjustment",
            Strategy::FlakyTestStabilization => "flaky_test_stabilization",
            Strategy::EnvironmentHealing => "environment_healing",
            Strategy::ApiContractAdaptation => "api_contract_adaptation",
            Strategy::SyntaxRepair => "syntax_repair",
        }
    }

    /// The strategy for a failure: syntax repair when the source does not parse, else the
    /// class's own.
    pub fn for_failure(class: FailureClass, source_parses: bool) -> Strategy {
        if !source_parses {
            return Strategy::SyntaxRepair;
        }
        match class {
            FailureClass::ImportError => Strategy::DependencyFix,
            FailureClass::AssertionFailure => Strategy::AssertionUpdate,
            FailureClass::Timeout => Strategy::TimingAdjustment,
            FailureClass::ApiChange => Strategy::ApiContractAdaptation,
            FailureClass::EnvironmentIssue => Strategy::EnvironmentHealing,
            FailureClass::FlakyBehavior => Strategy::FlakyTestStabilization,
        }
    }

    /// Applies the strategy to `source`, reading what it needs from the error `message`.
    pub fn apply(self, source: &str, message: &str) -> Option<String> {
        match self {
            Strategy::DependencyFix => dependency_fix(source, message),
            Strategy::AssertionUpdate => assertion_update(source),
            Strategy::TimingAdjustment => timing_adjustment(source),
            Strategy::FlakyTestStabilization => flaky_test_stabilization(source),
            Strategy::EnvironmentHealing => environment_healing(source, message),
            Strategy::ApiContractAdaptation => api_contract_adaptation(source),
            Strategy::SyntaxRepair => syntax_repair(source),
        }
    }
}

fn indent_of(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

fn is_import(line: &str) -> bool {
    line.starts_with("import ") || line.starts_with("from ")
}

/// The index after the leading block of imports (docstring and comments allowed before it).
fn after_imports(lines: &[String]) -> usize {
    let last_import = lines.iter().rposition(|l| is_import(l) && !l.starts_with(' ')).map(|i| i + 1);
    let first_code = lines.iter().position(|l| {
        let t = l.trim();
        !(t.is_empty() || t.starts_with('#') || is_import(l) || t.starts_with("\"\"\"") || t.starts_with("'''"))
    });
    match (last_import, first_code) {
        (Some(after), Some(code)) if after <= code => after,
        (Some(after), None) => after,
        _ => {
            first_code.map_or(lines.len(), |code| lines[..code].iter().rposition(|l| is_import(l)).map_or(0, |i| i + 1))
        }
    }
}

fn lines_of(source: &str) -> Vec<String> {
    source.lines().map(str::to_string).collect()
}

fn join(lines: &[String]) -> String {
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Adds `import <module>` after the leading imports unless the file already imports it.
fn ensure_import(lines: &mut Vec<String>, module: &str) {
    let plain = format!("import {module}");
    if lines.iter().any(|l| l.trim() == plain || l.trim().starts_with(&format!("{plain} "))) {
        return;
    }
    let at = after_imports(lines);
    lines.insert(at, plain);
}

/// The module an import error names: `No module named 'x.y'` or `cannot import name .. from 'x'`.
fn missing_module(message: &str) -> Option<String> {
    let quoted = |after: &str| -> Option<String> {
        let rest = &message[message.find(after)? + after.len()..];
        let rest = rest.trim_start().trim_start_matches(['\'', '"']);
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.').collect();
        (!name.is_empty()).then_some(name)
    };
    quoted("No module named").or_else(|| quoted(" from "))
}

fn dependency_fix(source: &str, message: &str) -> Option<String> {
    let module = missing_module(message)?;
    let mut lines = lines_of(source);
    let before = lines.len();
    ensure_import(&mut lines, &module);
    (lines.len() != before).then(|| join(&lines))
}

/// `assert a == b` -> `assert a == pytest.approx(b)`, on the first such line.
fn assertion_update(source: &str) -> Option<String> {
    let mut lines = lines_of(source);
    let at = lines.iter().position(|l| {
        let t = l.trim_start();
        t.starts_with("assert ") && t.contains(" == ") && !t.contains("approx(")
    })?;
    let line = &lines[at];
    let (left, right) = line.split_once(" == ")?;
    let (right, message) = match right.rsplit_once(", ") {
        Some((value, message)) if message.starts_with(['"', '\'', 'f']) => (value, format!(", {message}")),
        _ => (right, String::new()),
    };
    lines[at] = format!("{left} == pytest.approx({}){message}", right.trim_end());
    ensure_import(&mut lines, "pytest");
    Some(join(&lines))
}

const HTTP_CALLS: [&str; 8] = [
    "requests.get(",
    "requests.post(",
    "requests.put(",
    "requests.delete(",
    "client.get(",
    "client.post(",
    "session.get(",
    "httpx.",
];

fn timing_adjustment(source: &str) -> Option<String> {
    let mut lines = Vec::new();
    let mut changed = false;
    for line in source.lines() {
        let mut line = line.to_string();
        let mut from = 0;
        while let Some(at) = line[from..].find("timeout=").map(|i| from + i) {
            let start = at + "timeout=".len();
            let digits: String = line[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            if !digits.is_empty() && digits.parse::<f64>().is_ok_and(|n| n < 30.0) {
                line.replace_range(start..start + digits.len(), "30");
                changed = true;
            }
            from = start;
        }
        let call = HTTP_CALLS.iter().any(|c| line.contains(c)) && !line.trim_end().ends_with(['(', ',', '\\']);
        let indent = indent_of(&line).to_string();
        lines.push(line);
        if call {
            lines.push(format!("{indent}time.sleep(0.5)"));
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    ensure_import(&mut lines, "time");
    Some(join(&lines))
}

fn flaky_test_stabilization(source: &str) -> Option<String> {
    let mut lines = Vec::new();
    let mut previous = String::new();
    let mut changed = false;
    for line in source.lines() {
        let t = line.trim_start();
        let is_test = t.starts_with("def test_") || t.starts_with("async def test_");
        if is_test && !previous.trim_start().starts_with("@pytest.mark.flaky") {
            lines.push(format!("{}@pytest.mark.flaky(reruns=3, reruns_delay=1)", indent_of(line)));
            changed = true;
        }
        lines.push(line.to_string());
        previous = line.to_string();
    }
    if !changed {
        return None;
    }
    ensure_import(&mut lines, "pytest");
    Some(join(&lines))
}

/// The path a `FileNotFoundError` / `No such file or directory` names.
fn missing_path(message: &str) -> Option<String> {
    let rest = &message[message.find("No such file or directory")?..];
    let start = rest.find(['\'', '"'])?;
    let quote = rest[start..].chars().next()?;
    let path: String = rest[start + 1..].chars().take_while(|c| *c != quote).collect();
    (!path.is_empty()).then_some(path)
}

fn environment_healing(source: &str, message: &str) -> Option<String> {
    let path = missing_path(message)?;
    // A path with an extension names a file: create the directory it lives in.
    let file_like = path.rsplit('/').next().is_some_and(|last| last.contains('.'));
    let dir = if file_like { path.rsplit_once('/').map_or(".", |(d, _)| d).to_string() } else { path };
    let mut lines = lines_of(source);
    ensure_import(&mut lines, "os");
    let at = after_imports(&lines);
    let escaped = dir.replace('\\', "\\\\").replace('"', "\\\"");
    lines.insert(at, String::new());
    lines.insert(at + 1, format!("os.makedirs(\"{escaped}\", exist_ok=True)"));
    Some(join(&lines))
}

/// `<expr>.json()[key]` -> `<expr>.json().get(key)`: a missing key no longer raises.
fn api_contract_adaptation(source: &str) -> Option<String> {
    let mut changed = false;
    let lines: Vec<String> = source
        .lines()
        .map(|line| {
            let mut line = line.to_string();
            while let Some(at) = line.find(".json()[") {
                let open = at + ".json()".len();
                let Some(close) = line[open..].find(']').map(|i| open + i) else { break };
                let key = line[open + 1..close].to_string();
                line.replace_range(open..=close, &format!(".get({key})"));
                changed = true;
            }
            line
        })
        .collect();
    changed.then(|| join(&lines))
}

/// Block headers that must end with a colon.
const HEADERS: [&str; 12] =
    ["def ", "async def ", "class ", "if ", "elif ", "else", "for ", "while ", "with ", "try", "except", "finally"];

fn syntax_repair(source: &str) -> Option<String> {
    let offset = python::error_offset(source)?;
    let mut lines = lines_of(source);
    let row = source[..offset.min(source.len())].matches('\n').count();
    // The parser reports the token after the fault: the header is on this line or the last
    // non-blank one before it.
    for candidate in [row, row.saturating_sub(1)] {
        let Some(line) = lines.get(candidate) else { continue };
        let t = line.trim();
        if HEADERS.iter().any(|h| t.starts_with(h)) && !t.ends_with(':') && !t.contains('#') {
            lines[candidate] = format!("{}:", line.trim_end());
            return Some(join(&lines));
        }
    }
    // Otherwise re-indent the offending line like the previous code line (one level deeper
    // after a header).
    let row = row.min(lines.len().saturating_sub(1));
    let previous = lines[..row].iter().rposition(|l| !l.trim().is_empty())?;
    let base = indent_of(&lines[previous]).to_string();
    let indent = if lines[previous].trim_end().ends_with(':') { format!("{base}    ") } else { base };
    let fixed = format!("{indent}{}", lines[row].trim_start());
    (fixed != lines[row]).then(|| {
        lines[row] = fixed;
        join(&lines)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::healing::confidence::assess;
    use crate::healing::python::{def_names, parses};

    /// A realistic pytest file of a few KB: fixtures, HTTP calls with time-outs, JSON access,
    /// assertions, file fixtures; `extra` tests pad it out.
    fn test_file(extra: usize) -> String {
        let mut source = String::from(
            r#""""API tests for the orders service."""
import json
import os

import pytest
import requests

BASE_URL = os.environ.get("ORDERS_URL", "http://localhost:8000")


@pytest.fixture
def client():
    session = requests.Session()
    session.headers.update({"Authorization": "Bearer test-token"})
    yield session
    session.close()


def load_fixture(name):
    with open(os.path.join("fixtures", name)) as handle:
        return json.load(handle)


def test_create_order(client):
    payload = load_fixture("order.json")
    response = client.post(f"{BASE_URL}/orders", json=payload, timeout=5)
    assert response.status_code == 201
    body = response.json()
    assert body["total"] == 42.5


def test_get_order(client):
    response = requests.get(f"{BASE_URL}/orders/1", timeout=2)
    assert response.status_code == 200
    order_id = response.json()["id"]
    assert order_id == 1, "the first order"


class TestRefunds:
    def test_refund(self, client):
        response = client.post(f"{BASE_URL}/orders/1/refund", timeout=3)
        status = response.json()["status"]
        assert status == "refunded"
"#,
        );
        for i in 0..extra {
            source.push_str(&format!(
                "\n\ndef test_listing_page_{i}(client):\n    response = client.get(f\"{{BASE_URL}}/orders?page={i}\", timeout=4)\n    assert response.status_code == 200\n    items = response.json()[\"items\"]\n    assert len(items) <= 50\n"
            ));
        }
        source
    }

    fn test_names(source: &str) -> Vec<String> {
        def_names(source).unwrap().into_iter().filter(|n| n.starts_with("test_")).collect()
    }

    /// Every strategy on a realistic file: the output parses, keeps every test, changes what it
    /// claims to, and scores as a success.
    #[test]
    fn each_strategy_fixes_what_it_claims_and_keeps_the_tests() {
        let source = test_file(30);
        assert!(source.len() > 4_000 && parses(&source));
        let broken = source.replace("def test_get_order(client):", "def test_get_order(client)");
        type Fixed<'a> = &'a dyn Fn(&str) -> bool;
        let cases: [(Strategy, &str, &str, Fixed<'_>); 7] = [
            (Strategy::DependencyFix, &source, "ModuleNotFoundError: No module named 'requests_mock'", &|h| {
                h.contains("\nimport requests_mock\n")
            }),
            (Strategy::AssertionUpdate, &source, "AssertionError", &|h| {
                h.contains("assert response.status_code == pytest.approx(201)")
            }),
            (Strategy::TimingAdjustment, &source, "ReadTimeout", &|h| {
                !h.contains("timeout=5")
                    && h.contains("timeout=30")
                    && h.contains("time.sleep(0.5)")
                    && h.contains("\nimport time\n")
            }),
            (Strategy::FlakyTestStabilization, &source, "", &|h| {
                h.matches("@pytest.mark.flaky(reruns=3, reruns_delay=1)").count() == 33
            }),
            (
                Strategy::EnvironmentHealing,
                &source,
                "FileNotFoundError: [Errno 2] No such file or directory: 'fixtures/order.json'",
                &|h| h.contains("os.makedirs(\"fixtures\", exist_ok=True)"),
            ),
            (Strategy::ApiContractAdaptation, &source, "KeyError: 'id'", &|h| {
                h.contains("response.json().get(\"id\")") && !h.contains(".json()[")
            }),
            (Strategy::SyntaxRepair, &broken, "SyntaxError", &|h| h.contains("def test_get_order(client):")),
        ];
        for (strategy, input, message, fixed) in cases {
            let healed =
                strategy.apply(input, message).unwrap_or_else(|| panic!("{} changed nothing", strategy.name()));
            assert!(parses(&healed), "{}: the healed source does not parse:\n{healed}", strategy.name());
            assert_eq!(test_names(&healed), test_names(&source), "{} lost or renamed tests", strategy.name());
            assert!(fixed(&healed), "{} did not make its change:\n{healed}", strategy.name());
            let verdict = assess(input, &healed);
            assert!(verdict.success && verdict.confidence > 0.9, "{}: {verdict:?}", strategy.name());
        }
    }

    #[test]
    fn strategies_that_find_nothing_change_nothing() {
        let plain = "def test_x():\n    assert True\n";
        assert_eq!(Strategy::DependencyFix.apply(plain, "AssertionError"), None);
        assert_eq!(Strategy::AssertionUpdate.apply(plain, ""), None);
        assert_eq!(Strategy::TimingAdjustment.apply(plain, ""), None);
        assert_eq!(Strategy::EnvironmentHealing.apply(plain, "no path here"), None);
        assert_eq!(Strategy::ApiContractAdaptation.apply(plain, ""), None);
        assert_eq!(Strategy::SyntaxRepair.apply(plain, ""), None, "it parses already");
    }

    #[test]
    fn syntax_repair_fixes_indentation_too() {
        let source = "import os\n\n\ndef test_x():\n    value = 1\n      assert value == 1\n";
        let healed = Strategy::SyntaxRepair.apply(source, "IndentationError").unwrap();
        assert!(parses(&healed), "{healed}");
        assert!(healed.contains("\n    assert value == 1\n"), "{healed}");
    }

    #[test]
    fn each_class_maps_to_its_strategy() {
        use FailureClass::*;
        let table = [
            (ImportError, "dependency_fix"),
            (AssertionFailure, "assertion_update"),
            (Timeout, "timing_adjustment"),
            (ApiChange, "api_contract_adaptation"),
            (EnvironmentIssue, "environment_healing"),
            (FlakyBehavior, "flaky_test_stabilization"),
        ];
        for (class, strategy) in table {
            assert_eq!(Strategy::for_failure(class, true).name(), strategy);
            assert_eq!(Strategy::for_failure(class, false), Strategy::SyntaxRepair);
        }
    }
}
