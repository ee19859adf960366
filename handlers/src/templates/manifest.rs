//! The quality gate: the old template service's manifest schema and quality score, rule for
//! rule (keys, types, limits, the placeholder key `variable`, the score's keys). The old
//! service computed the score and then ignored it; the engine rejects a create or update whose
//! manifest breaks a rule or scores below the configured minimum, naming every failed rule in
//! plain words (`metadata.category "games" must be one of backend, ...`).
//!
//! The gate also gives the manifest as the old validator stored it: languages and frameworks
//! trimmed, tags lower-cased and trimmed, OS and architecture names lower-cased, and each
//! placeholder's `name` (accepted as an alias) under `variable`.

use serde_json::{Map, Value};

pub const ENGINES: [&str; 4] = ["jinja2", "cookiecutter", "copier", "custom"];
pub const CATEGORIES: [&str; 12] = [
    "backend",
    "frontend",
    "fullstack",
    "mobile",
    "devops",
    "data",
    "ml",
    "library",
    "cli",
    "utility",
    "api",
    "business_logic",
];
pub const PLACEHOLDER_TYPES: [&str; 6] = ["string", "integer", "boolean", "float", "list", "object"];
pub const OPERATING_SYSTEMS: [&str; 5] = ["linux", "darwin", "windows", "freebsd", "openbsd"];
pub const ARCHITECTURES: [&str; 5] = ["amd64", "arm64", "arm", "x86", "i386"];
const HOOK_STAGES: [&str; 4] = ["pre_generation", "post_generation", "pre_deployment", "post_deployment"];

/// The default minimum score of an accepted create or update.
pub const DEFAULT_MIN_SCORE: i64 = 70;

/// What the gate found: the score (0-100), every rule the manifest breaks, and the manifest
/// as the old validator stored it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateReport {
    pub score: i64,
    pub failures: Vec<String>,
    pub normalized: Value,
}

impl GateReport {
    /// Accepted: no rule broken and the score at least `min_score`.
    pub fn passes(&self, min_score: i64) -> bool {
        self.failures.is_empty() && self.score >= min_score
    }

    /// The rejection text naming every failed rule (and the score when it is too low).
    pub fn reason(&self, min_score: i64) -> String {
        let mut reasons = self.failures.clone();
        if self.score < min_score {
            reasons.push(format!("quality score {} is below the minimum {min_score}", self.score));
        }
        reasons.join("; ")
    }
}

/// Collects failures while the manifest is walked; `path` names where each one is.
struct Gate {
    failures: Vec<String>,
}

impl Gate {
    fn fail(&mut self, text: String) {
        self.failures.push(text);
    }

    /// A required string; `None` after naming the failure when it is absent or not a string.
    fn required_text<'a>(&mut self, object: &'a Map<String, Value>, path: &str, key: &str) -> Option<&'a str> {
        match object.get(key) {
            Some(Value::String(text)) => Some(text),
            None | Some(Value::Null) => {
                self.fail(format!("{path}{key} is required"));
                None
            }
            Some(other) => {
                self.fail(format!("{path}{key} must be a string, not {}", kind(other)));
                None
            }
        }
    }

    /// An optional object (absent and null are the same); `None` after naming a wrong type.
    fn optional_object<'a>(&mut self, value: Option<&'a Value>, path: &str) -> Option<&'a Map<String, Value>> {
        match value {
            Some(Value::Object(object)) => Some(object),
            None | Some(Value::Null) => None,
            Some(other) => {
                self.fail(format!("{path} must be an object, not {}", kind(other)));
                None
            }
        }
    }

    /// An optional list of strings (absent and null are empty).
    fn string_list<'a>(&mut self, value: Option<&'a Value>, path: &str) -> Vec<&'a str> {
        match value {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|item| match item {
                    Value::String(text) => Some(text.as_str()),
                    other => {
                        self.fail(format!("{path} items must be strings, not {}", kind(other)));
                        None
                    }
                })
                .collect(),
            Some(other) => {
                self.fail(format!("{path} must be a list of strings, not {}", kind(other)));
                Vec::new()
            }
        }
    }
}

/// A JSON type's name as a person would say it.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn is_name(name: &str) -> bool {
    (1..=100).contains(&name.chars().count()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `MAJOR.MINOR.PATCH`, then optionally `-` and `+` parts of `[0-9A-Za-z-]` without dots.
fn is_old_semver(version: &str) -> bool {
    let part = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let (rest, build) = version.split_once('+').unwrap_or((version, ""));
    let (core, pre) = rest.split_once('-').unwrap_or((rest, ""));
    let numbers: Vec<&str> = core.split('.').collect();
    numbers.len() == 3
        && numbers.iter().all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        && (!rest.contains('-') || part(pre))
        && (!version.contains('+') || part(build))
}

fn is_variable(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn is_tag(tag: &str) -> bool {
    !tag.is_empty() && tag.len() <= 30 && tag.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_relative_path(path: &str) -> bool {
    !path.starts_with('/') && !path.contains("..")
}

/// Checks `name`, `version`, `description`, `author` and `engine`.
fn identity_rules(gate: &mut Gate, manifest: &Map<String, Value>) {
    if let Some(name) = gate.required_text(manifest, "", "name")
        && !is_name(name)
    {
        gate.fail(format!("name {name:?} must be 1-100 characters of letters, digits, _ and -"));
    }
    if let Some(version) = gate.required_text(manifest, "", "version")
        && !is_old_semver(version)
    {
        gate.fail(format!("version {version:?} must be MAJOR.MINOR.PATCH with an optional -prerelease and +build"));
    }
    if let Some(description) = gate.required_text(manifest, "", "description") {
        let n = description.chars().count();
        if !(10..=500).contains(&n) {
            gate.fail(format!("description is {n} characters long; it must be 10-500"));
        }
    }
    gate.required_text(manifest, "", "author");
    if let Some(engine) = gate.required_text(manifest, "", "engine")
        && !ENGINES.contains(&engine)
    {
        gate.fail(format!("engine {engine:?} must be one of {}", ENGINES.join(", ")));
    }
}

/// Checks `metadata`, and stores its language, framework and tags as the old validator did.
fn metadata_rules(gate: &mut Gate, manifest: &mut Map<String, Value>) {
    let Some(Value::Object(metadata)) = manifest.get_mut("metadata") else {
        gate.fail(match manifest.get("metadata") {
            None | Some(Value::Null) => "metadata is required".into(),
            Some(other) => format!("metadata must be an object, not {}", kind(other)),
        });
        return;
    };
    for field in ["language", "framework"] {
        if let Some(text) = gate.required_text(metadata, "metadata.", field) {
            let trimmed = text.trim().to_string();
            if trimmed.is_empty() {
                gate.fail(format!("metadata.{field} must not be blank"));
            }
            metadata.insert(field.into(), Value::String(trimmed));
        }
    }
    if let Some(category) = gate.required_text(metadata, "metadata.", "category")
        && !CATEGORIES.contains(&category)
    {
        gate.fail(format!("metadata.category {category:?} must be one of {}", CATEGORIES.join(", ")));
    }
    gate.required_text(metadata, "metadata.", "license");
    match metadata.get("tags") {
        None | Some(Value::Null) => gate.fail("metadata.tags is required".into()),
        Some(tags) => {
            let tags: Vec<String> =
                gate.string_list(Some(tags), "metadata.tags").into_iter().map(str::to_string).collect();
            if !(1..=10).contains(&tags.len()) {
                gate.fail(format!("metadata.tags has {} tags; it must have 1-10", tags.len()));
            } else {
                let stored: Vec<String> = tags.iter().map(|t| t.trim().to_lowercase()).collect();
                for tag in stored.iter().filter(|t| !is_tag(t)) {
                    gate.fail(format!("tag {tag:?} must be at most 30 characters of a-z, 0-9 and -"));
                }
                metadata.insert("tags".into(), stored.into());
            }
        }
    }
}

/// Whether a choice fits a placeholder type (Python's view: a boolean is an integer too).
fn fits(choice: &Value, kind: &str) -> bool {
    match kind {
        "integer" => choice.is_i64() || choice.is_u64() || choice.is_boolean(),
        "boolean" => choice.is_boolean(),
        "float" => choice.is_number() || choice.is_boolean(),
        _ => true,
    }
}

/// Checks `placeholders` and stores each one's name under `variable`.
fn placeholder_rules(gate: &mut Gate, manifest: &mut Map<String, Value>) {
    let placeholders = match manifest.get_mut("placeholders") {
        None | Some(Value::Null) => return,
        Some(Value::Array(placeholders)) => placeholders,
        Some(other) => {
            let text = format!("placeholders must be a list, not {}", kind(other));
            gate.fail(text);
            return;
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    for (i, placeholder) in placeholders.iter_mut().enumerate() {
        let Value::Object(p) = placeholder else {
            gate.fail(format!("placeholders[{i}] must be an object, not {}", kind(placeholder)));
            continue;
        };
        if !p.contains_key("variable")
            && let Some(name) = p.remove("name")
        {
            p.insert("variable".into(), name);
        }
        let path = format!("placeholders[{i}].");
        let variable = gate.required_text(p, &path, "variable").map(str::to_string);
        if let Some(variable) = &variable {
            if !is_variable(variable) {
                gate.fail(format!("placeholder {variable:?} must be UPPER_SNAKE (A-Z first, then A-Z, 0-9, _)"));
            }
            if !seen.insert(variable.clone()) {
                gate.fail(format!("placeholder {variable:?} is declared twice"));
            }
        }
        let label = variable.map_or(format!("placeholders[{i}]"), |v| format!("placeholder {v:?}"));
        gate.required_text(p, &path, "description");
        let kind_name = match p.get("type") {
            None => "string",
            Some(Value::String(t)) if PLACEHOLDER_TYPES.contains(&t.as_str()) => t.as_str(),
            Some(other) => {
                gate.fail(format!("{label} has type {other}, not one of {}", PLACEHOLDER_TYPES.join(", ")));
                "string"
            }
        };
        match p.get("pattern") {
            None | Some(Value::Null) => {}
            Some(Value::String(pattern)) if regex_syntax::Parser::new().parse(pattern).is_ok() => {}
            Some(pattern) => gate.fail(format!("{label} has pattern {pattern}, not a valid regex")),
        }
        match p.get("required") {
            None | Some(Value::Bool(_)) => {}
            Some(other) => gate.fail(format!("{label} has required {other}, not true or false")),
        }
        match p.get("choices") {
            None | Some(Value::Null) => {}
            Some(Value::Array(choices)) => {
                for choice in choices.iter().filter(|c| !fits(c, kind_name)) {
                    gate.fail(format!("{label} has choice {choice}, not of type {kind_name}"));
                }
            }
            Some(other) => gate.fail(format!("{label} has choices {other}, not a list")),
        }
    }
}

/// Checks `dependencies`, `hooks`, `configuration` and `documentation`.
fn environment_rules(gate: &mut Gate, manifest: &mut Map<String, Value>) {
    if let Some(dependencies) = gate.optional_object(manifest.get("dependencies"), "dependencies") {
        for list in ["runtime", "build", "services"] {
            gate.string_list(dependencies.get(list), &format!("dependencies.{list}"));
        }
    }
    if let Some(hooks) = gate.optional_object(manifest.get("hooks"), "hooks") {
        for stage in HOOK_STAGES {
            for hook in gate.string_list(hooks.get(stage), &format!("hooks.{stage}")) {
                if !is_relative_path(hook) {
                    gate.fail(format!("hook {hook:?} must be a relative path without .. and without a leading /"));
                }
            }
        }
    }
    if let Some(documentation) = gate.optional_object(manifest.get("documentation"), "documentation") {
        for field in ["readme", "quickstart", "api_docs"] {
            match documentation.get(field) {
                None | Some(Value::Null) | Some(Value::String(_)) => {}
                Some(other) => gate.fail(format!("documentation.{field} must be a string, not {}", kind(other))),
            }
        }
        gate.string_list(documentation.get("examples"), "documentation.examples");
    }
    let configuration = match manifest.get_mut("configuration") {
        Some(Value::Object(configuration)) => configuration,
        None | Some(Value::Null) => return,
        Some(other) => {
            let text = format!("configuration must be an object, not {}", kind(other));
            gate.fail(text);
            return;
        }
    };
    for (field, allowed) in [("supported_os", &OPERATING_SYSTEMS[..]), ("architecture", &ARCHITECTURES[..])] {
        let path = format!("configuration.{field}");
        let values: Vec<String> =
            gate.string_list(configuration.get(field), &path).into_iter().map(str::to_lowercase).collect();
        for value in values.iter().filter(|v| !allowed.contains(&v.as_str())) {
            gate.fail(format!("{path} value {value:?} must be one of {}", allowed.join(", ")));
        }
        if configuration.get(field).is_some_and(Value::is_array) {
            configuration.insert(field.into(), values.into());
        }
    }
}

fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

fn count(value: &Value, path: &[&str]) -> usize {
    at(value, path).and_then(Value::as_array).map_or(0, Vec::len)
}

/// The quality score: 100, less what is missing, plus what is generous; clamped to 0-100.
/// Reads exactly the keys the old `get_validation_score` read.
pub fn score(manifest: &Value) -> i64 {
    let placeholders = count(manifest, &["placeholders"]);
    let tags = count(manifest, &["metadata", "tags"]);
    let has_hooks = count(manifest, &["hooks", "pre_generation"]) + count(manifest, &["hooks", "post_generation"]) > 0;
    let has_readme = at(manifest, &["documentation", "readme"]).and_then(Value::as_str).is_some_and(|r| !r.is_empty());
    let has_runtime =
        count(manifest, &["dependencies", "runtime"]) + count(manifest, &["dependencies", "services"]) > 0;
    let has_configuration = manifest.get("configuration").is_some_and(|c| !c.is_null());
    let has_examples = count(manifest, &["documentation", "examples"]) > 0;
    let mut score = 100i64;
    for (missing, penalty) in [
        (placeholders == 0, 10),
        (!has_hooks, 5),
        (!has_readme, 10),
        (tags < 3, 5),
        (!has_runtime, 5),
        (!has_configuration, 5),
    ] {
        if missing {
            score -= penalty;
        }
    }
    for (generous, bonus) in [(placeholders >= 5, 5), (has_examples, 5), (tags >= 7, 5)] {
        if generous {
            score += bonus;
        }
    }
    score.clamp(0, 100)
}

/// Runs every rule and the score.
pub fn check(manifest: &Value) -> GateReport {
    let Value::Object(object) = manifest else {
        return GateReport {
            score: 0,
            failures: vec![format!("the manifest must be an object, not {}", kind(manifest))],
            normalized: manifest.clone(),
        };
    };
    let mut normalized = object.clone();
    let mut gate = Gate { failures: Vec::new() };
    identity_rules(&mut gate, &normalized);
    metadata_rules(&mut gate, &mut normalized);
    placeholder_rules(&mut gate, &mut normalized);
    environment_rules(&mut gate, &mut normalized);
    let normalized = Value::Object(normalized);
    GateReport { score: score(&normalized), failures: gate.failures, normalized }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
