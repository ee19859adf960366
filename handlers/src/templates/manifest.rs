//! The quality gate: the manifest rules and the quality score of domain.md section 2. The old
//! service computed the score and then ignored it; the engine rejects a create or update whose
//! manifest breaks a rule or scores below the configured minimum, naming every failed rule.

use serde_json::Value;

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

/// The default minimum score of an accepted create or update.
pub const DEFAULT_MIN_SCORE: i64 = 70;

/// What the gate found: the score (0-100) and every rule the manifest breaks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateReport {
    pub score: i64,
    pub failures: Vec<String>,
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

fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, key| v.get(key)).and_then(Value::as_str)
}

fn list<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    path.iter().try_fold(value, |v, key| v.get(key)).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn is_upper_snake(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn is_tag(tag: &str) -> bool {
    !tag.is_empty() && tag.len() <= 30 && tag.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.starts_with('\\')
        && !path.split(['/', '\\']).any(|part| part == "..")
}

/// Checks the manifest's own fields.
fn identity_rules(manifest: &Value, failures: &mut Vec<String>) {
    match text(manifest, &["name"]) {
        Some(name)
            if (1..=100).contains(&name.len())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') => {}
        Some(name) => failures.push(format!("name {name:?} must match ^[a-zA-Z0-9_-]+$ and be 1-100 characters")),
        None => failures.push("name is required".into()),
    }
    match text(manifest, &["version"]) {
        Some(version) if semver::Version::parse(version).is_ok() => {}
        Some(version) => failures.push(format!("version {version:?} is not semver")),
        None => failures.push("version is required".into()),
    }
    match text(manifest, &["description"]).map(|d| d.chars().count()) {
        Some(10..=500) => {}
        Some(n) => failures.push(format!("description is {n} characters, it must be 10-500")),
        None => failures.push("description is required".into()),
    }
    if text(manifest, &["author"]).is_none_or(str::is_empty) {
        failures.push("author is required".into());
    }
    match text(manifest, &["engine"]) {
        Some(engine) if ENGINES.contains(&engine) => {}
        other => failures.push(format!("engine {other:?} must be one of {}", ENGINES.join(", "))),
    }
}

/// Checks `metadata`.
fn metadata_rules(manifest: &Value, failures: &mut Vec<String>) {
    for field in ["language", "framework"] {
        if text(manifest, &["metadata", field]).is_none_or(str::is_empty) {
            failures.push(format!("metadata.{field} is required"));
        }
    }
    match text(manifest, &["metadata", "category"]) {
        Some(category) if CATEGORIES.contains(&category) => {}
        other => failures.push(format!("metadata.category {other:?} must be one of {}", CATEGORIES.join(", "))),
    }
    let tags = list(manifest, &["metadata", "tags"]);
    if !(1..=10).contains(&tags.len()) {
        failures.push(format!("metadata.tags has {} tags, it must have 1-10", tags.len()));
    }
    for tag in tags {
        match tag.as_str() {
            Some(t) if is_tag(t) => {}
            _ => failures.push(format!("tag {tag} must be lowercase [a-z0-9-], at most 30 characters")),
        }
    }
}

/// Whether `value` is of placeholder type `kind`.
fn of_type(value: &Value, kind: &str) -> bool {
    match kind {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        "float" => value.is_number(),
        "list" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

/// Checks `placeholders`.
fn placeholder_rules(manifest: &Value, failures: &mut Vec<String>) {
    let mut seen = std::collections::BTreeSet::new();
    for placeholder in list(manifest, &["placeholders"]) {
        let name = placeholder.get("name").and_then(Value::as_str).unwrap_or("");
        if !is_upper_snake(name) {
            failures.push(format!("placeholder {name:?} must be UPPER_SNAKE"));
        }
        if !seen.insert(name) {
            failures.push(format!("placeholder {name:?} is declared twice"));
        }
        let kind = placeholder.get("type").and_then(Value::as_str).unwrap_or("string");
        if !PLACEHOLDER_TYPES.contains(&kind) {
            failures
                .push(format!("placeholder {name:?} has type {kind:?}, not one of {}", PLACEHOLDER_TYPES.join(", ")));
        }
        if let Some(pattern) = placeholder.get("pattern") {
            let valid = pattern.as_str().is_some_and(|p| regex_syntax::Parser::new().parse(p).is_ok());
            if !valid {
                failures.push(format!("placeholder {name:?} has pattern {pattern}, not a valid regex"));
            }
        }
        for choice in placeholder.get("choices").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            if !of_type(choice, kind) {
                failures.push(format!("placeholder {name:?} has choice {choice}, not of type {kind}"));
            }
        }
    }
}

/// Checks hooks and `configuration`.
fn environment_rules(manifest: &Value, failures: &mut Vec<String>) {
    for stage in ["pre_generation", "post_generation"] {
        for hook in list(manifest, &["hooks", stage]) {
            if !hook.as_str().is_some_and(is_relative_path) {
                failures.push(format!("hook {hook} must be a relative path without `..`"));
            }
        }
    }
    for (field, allowed) in [("supported_os", &OPERATING_SYSTEMS[..]), ("architecture", &ARCHITECTURES[..])] {
        for value in list(manifest, &["configuration", field]) {
            if !value.as_str().is_some_and(|v| allowed.contains(&v)) {
                failures.push(format!("configuration.{field} value {value} must be one of {}", allowed.join(", ")));
            }
        }
    }
}

/// The quality score: 100, less what is missing, plus what is generous; clamped to 0-100.
pub fn score(manifest: &Value) -> i64 {
    let placeholders = list(manifest, &["placeholders"]).len();
    let tags = list(manifest, &["metadata", "tags"]).len();
    let has_hooks = !list(manifest, &["hooks", "pre_generation"]).is_empty()
        || !list(manifest, &["hooks", "post_generation"]).is_empty();
    let has_readme = text(manifest, &["documentation", "readme"]).is_some_and(|r| !r.is_empty());
    let has_runtime =
        !list(manifest, &["dependencies", "runtime"]).is_empty() || !list(manifest, &["services"]).is_empty();
    let has_configuration = manifest.get("configuration").is_some_and(|c| !c.is_null());
    let has_examples = !list(manifest, &["documentation", "examples"]).is_empty();
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
    let mut failures = Vec::new();
    if !manifest.is_object() {
        return GateReport { score: 0, failures: vec!["manifest must be a JSON object".into()] };
    }
    identity_rules(manifest, &mut failures);
    metadata_rules(manifest, &mut failures);
    placeholder_rules(manifest, &mut failures);
    environment_rules(manifest, &mut failures);
    GateReport { score: score(manifest), failures }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "name": "fastapi-service", "version": "1.2.0-rc.1+build.7", "description": "A production-ready FastAPI service",
            "author": "platform-team", "engine": "jinja2",
            "metadata": {"language": "python", "framework": "fastapi", "category": "backend", "tags": ["rest", "docker", "ci"]},
            "placeholders": [{"name": "PROJECT_NAME", "type": "string", "pattern": "^[a-z][a-z0-9-]*$"},
                             {"name": "PORT", "type": "integer", "choices": [8000, 8080]}],
            "hooks": {"pre_generation": ["hooks/check.py"], "post_generation": ["hooks/init.sh"]},
            "documentation": {"readme": "README.md", "examples": ["basic"]},
            "dependencies": {"runtime": ["fastapi>=0.110"]},
            "configuration": {"supported_os": ["linux", "darwin"], "architecture": ["amd64", "arm64"]}
        })
    }

    fn with(mut manifest: Value, pointer: &str, value: Value) -> Value {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = if parent.is_empty() { &mut manifest } else { manifest.pointer_mut(parent).unwrap() };
        target[key] = value;
        manifest
    }

    #[test]
    fn a_complete_manifest_passes_with_its_score() {
        let report = check(&good());
        assert_eq!(report.failures, Vec::<String>::new());
        // 100, +5 for examples; nothing missing.
        assert_eq!(report.score, 100);
        assert!(report.passes(DEFAULT_MIN_SCORE));
    }

    #[test]
    fn every_rule_is_named_when_broken() {
        let cases = [
            ("/name", json!("has space"), "name \"has space\" must match"),
            ("/name", json!(""), "must match ^[a-zA-Z0-9_-]+$"),
            ("/version", json!("1.2"), "version \"1.2\" is not semver"),
            ("/description", json!("too short"), "description is 9 characters"),
            ("/author", json!(""), "author is required"),
            ("/engine", json!("mustache"), "engine Some(\"mustache\") must be one of"),
            ("/metadata/language", json!(""), "metadata.language is required"),
            ("/metadata/framework", Value::Null, "metadata.framework is required"),
            ("/metadata/category", json!("games"), "metadata.category Some(\"games\")"),
            ("/metadata/tags", json!([]), "metadata.tags has 0 tags"),
            ("/metadata/tags", json!(["Rest"]), "tag \"Rest\" must be lowercase"),
            ("/metadata/tags", json!(["a".repeat(31)]), "at most 30 characters"),
            ("/placeholders", json!([{"name": "projectName"}]), "placeholder \"projectName\" must be UPPER_SNAKE"),
            ("/placeholders", json!([{"name": "A"}, {"name": "A"}]), "placeholder \"A\" is declared twice"),
            ("/placeholders", json!([{"name": "A", "type": "date"}]), "has type \"date\""),
            ("/placeholders", json!([{"name": "A", "pattern": "(unclosed"}]), "not a valid regex"),
            (
                "/placeholders",
                json!([{"name": "A", "type": "integer", "choices": [1, "two"]}]),
                "choice \"two\", not of type integer",
            ),
            ("/hooks/pre_generation", json!(["../escape.sh"]), "must be a relative path"),
            ("/hooks/post_generation", json!(["/etc/passwd"]), "must be a relative path"),
            ("/configuration/supported_os", json!(["beos"]), "configuration.supported_os value \"beos\""),
            ("/configuration/architecture", json!(["mips"]), "configuration.architecture value \"mips\""),
        ];
        for (pointer, value, expected) in cases {
            let report = check(&with(good(), pointer, value.clone()));
            assert!(
                report.failures.iter().any(|f| f.contains(expected)),
                "{pointer} = {value}: expected {expected:?} in {:?}",
                report.failures
            );
            assert!(!report.passes(DEFAULT_MIN_SCORE));
        }
    }

    #[test]
    fn the_score_follows_the_table() {
        let bare = json!({"metadata": {"tags": ["a"]}});
        // -10 placeholders, -5 hooks, -10 readme, -5 tags, -5 runtime, -5 configuration.
        assert_eq!(score(&bare), 60);
        let rich = with(good(), "/metadata/tags", json!(["a", "b", "c", "d", "e", "f", "g"]));
        let rich = with(
            rich,
            "/placeholders",
            json!([{"name": "A"}, {"name": "B"}, {"name": "C"}, {"name": "D"}, {"name": "E"}]),
        );
        assert_eq!(score(&rich), 100, "bonuses are clamped at 100");
        let no_readme = with(good(), "/documentation", json!({}));
        assert_eq!(score(&no_readme), 90, "-10 readme; the examples bonus goes with the examples");
        let report = check(&bare);
        assert!(!report.passes(DEFAULT_MIN_SCORE));
        assert!(report.reason(DEFAULT_MIN_SCORE).contains("quality score 60 is below the minimum 70"));
        let services_only = with(with(good(), "/dependencies", json!({})), "/services", json!(["postgres"]));
        assert_eq!(score(&services_only), 100, "services count as runtime needs");
    }
}
