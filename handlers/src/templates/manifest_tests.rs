use super::*;
use serde_json::json;

/// Real-size manifests in the old repository's form (`variable` placeholders, ignored keys,
/// `Commerce` and ` typescript ` as the old validator normalised them).
const NEXTJS: &str = include_str!("../../../tests/fixtures/manifests/nextjs-commerce.json");
const FASTAPI: &str = include_str!("../../../tests/fixtures/manifests/fastapi-production.json");

fn good() -> Value {
    json!({
        "name": "fastapi-service", "version": "1.2.0-rc1+build7", "description": "A production-ready FastAPI service",
        "author": "platform-team", "engine": "jinja2",
        "metadata": {"language": "python", "framework": "fastapi", "category": "backend", "tags": ["rest", "docker", "ci"], "license": "MIT"},
        "placeholders": [{"variable": "PROJECT_NAME", "description": "name", "type": "string", "pattern": "^[a-z][a-z0-9-]*$"},
                         {"variable": "PORT", "description": "port", "type": "integer", "choices": [8000, 8080]}],
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
    assert_eq!(report.score, 100);
    assert!(report.passes(DEFAULT_MIN_SCORE));
}

#[test]
fn the_old_repositorys_real_size_manifests_pass_and_are_stored_as_the_old_validator_stored_them() {
    for text in [NEXTJS, FASTAPI] {
        assert!(text.len() > 5000, "a real-size manifest");
        let manifest: Value = serde_json::from_str(text).unwrap();
        let report = check(&manifest);
        assert_eq!(report.failures, Vec::<String>::new(), "{}", manifest["name"]);
        assert_eq!(report.score, 100, "{}", manifest["name"]);
        for placeholder in report.normalized["placeholders"].as_array().unwrap() {
            assert!(placeholder["variable"].is_string() && placeholder.get("name").is_none(), "{placeholder}");
        }
    }
    let next = check(&serde_json::from_str(NEXTJS).unwrap()).normalized;
    assert_eq!(next["metadata"]["language"], "typescript", "trimmed");
    assert!(next["metadata"]["tags"].as_array().unwrap().contains(&json!("commerce")), "lower-cased");
    assert_eq!(next["configuration"]["supported_os"], json!(["linux", "darwin", "windows"]));
    assert_eq!(next["features"].as_array().unwrap().len(), 13, "unknown keys are kept, not checked");
}

#[test]
fn every_rule_is_named_in_plain_words_when_broken() {
    let cases = [
        ("/name", json!("has space"), "name \"has space\" must be 1-100 characters"),
        ("/name", json!(""), "name \"\" must be"),
        ("/name", json!(7), "name must be a string, not a number"),
        ("/version", json!("1.2"), "version \"1.2\" must be MAJOR.MINOR.PATCH"),
        ("/version", json!("v1.2.0"), "version \"v1.2.0\""),
        ("/version", json!("1.2.0-rc.1"), "version \"1.2.0-rc.1\""),
        ("/description", json!("too short"), "description is 9 characters long"),
        ("/author", Value::Null, "author is required"),
        ("/engine", json!("mustache"), "engine \"mustache\" must be one of jinja2, cookiecutter, copier, custom"),
        ("/metadata/language", json!("  "), "metadata.language must not be blank"),
        ("/metadata/framework", Value::Null, "metadata.framework is required"),
        ("/metadata/category", json!("games"), "metadata.category \"games\" must be one of backend"),
        ("/metadata/license", Value::Null, "metadata.license is required"),
        ("/metadata/tags", json!([]), "metadata.tags has 0 tags; it must have 1-10"),
        ("/metadata/tags", json!(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]), "has 11 tags"),
        ("/metadata/tags", json!(["rest api"]), "tag \"rest api\" must be"),
        ("/metadata/tags", json!(["a".repeat(31)]), "at most 30 characters"),
        ("/metadata", json!("backend"), "metadata must be an object, not a string"),
        (
            "/placeholders",
            json!([{"variable": "projectName", "description": "d"}]),
            "\"projectName\" must be UPPER_SNAKE",
        ),
        (
            "/placeholders",
            json!([{"variable": "A", "description": "d"}, {"name": "A", "description": "d"}]),
            "placeholder \"A\" is declared twice",
        ),
        ("/placeholders", json!([{"variable": "A"}]), "placeholders[0].description is required"),
        ("/placeholders", json!([{"description": "d"}]), "placeholders[0].variable is required"),
        ("/placeholders", json!([{"variable": "A", "description": "d", "type": "date"}]), "has type \"date\""),
        ("/placeholders", json!([{"variable": "A", "description": "d", "pattern": "(unclosed"}]), "not a valid regex"),
        (
            "/placeholders",
            json!([{"variable": "A", "description": "d", "type": "integer", "choices": [1, "two"]}]),
            "placeholder \"A\" has choice \"two\", not of type integer",
        ),
        ("/hooks/pre_generation", json!(["../escape.sh"]), "must be a relative path"),
        ("/hooks/post_deployment", json!(["/etc/passwd"]), "must be a relative path"),
        ("/dependencies/services", json!("postgres"), "dependencies.services must be a list of strings"),
        ("/configuration/supported_os", json!(["beos"]), "configuration.supported_os value \"beos\""),
        ("/configuration/architecture", json!({"x86": true}), "configuration.architecture must be a list"),
        ("/configuration/architecture", json!(["mips"]), "configuration.architecture value \"mips\""),
    ];
    for (pointer, value, expected) in cases {
        let report = check(&with(good(), pointer, value.clone()));
        assert!(
            report.failures.iter().any(|f| f.contains(expected)),
            "{pointer} = {value}: expected {expected:?} in {:?}",
            report.failures
        );
        assert!(report.failures.iter().all(|f| !f.contains("Some(") && !f.contains("None")), "{:?}", report.failures);
        assert!(!report.passes(DEFAULT_MIN_SCORE));
    }
    assert!(check(&json!([])).failures[0].contains("must be an object, not a list"));
}

#[test]
fn what_the_old_validator_accepted_passes() {
    let cases = [
        ("/placeholders", json!([{"name": "A", "description": "the old alias"}])),
        ("/placeholders", json!([{"variable": "A", "description": "d", "type": "integer", "choices": [1, true]}])),
        ("/placeholders", json!([{"variable": "A", "description": "d", "type": "list", "choices": [1, "x"]}])),
        ("/metadata/tags", json!(["API", " docker "])),
        ("/configuration/architecture", json!(["AMD64"])),
        ("/configuration", json!({})),
        ("/dependencies", Value::Null),
        ("/version", json!("10.0.0-beta-2")),
    ];
    for (pointer, value) in cases {
        let report = check(&with(good(), pointer, value.clone()));
        assert_eq!(report.failures, Vec::<String>::new(), "{pointer} = {value}");
    }
    let report = check(&with(good(), "/metadata/tags", json!(["API", " docker "])));
    assert_eq!(report.normalized["metadata"]["tags"], json!(["api", "docker"]));
}

#[test]
fn the_score_reads_the_old_keys() {
    let bare = json!({"metadata": {"tags": ["a"]}});
    // -10 placeholders, -5 hooks, -10 readme, -5 tags, -5 runtime, -5 configuration.
    assert_eq!(score(&bare), 60);
    let rich = with(good(), "/metadata/tags", json!(["a", "b", "c", "d", "e", "f", "g"]));
    let five = json!([{"variable": "A"}, {"variable": "B"}, {"variable": "C"}, {"variable": "D"}, {"variable": "E"}]);
    assert_eq!(score(&with(rich, "/placeholders", five)), 100, "bonuses are clamped at 100");
    let no_readme = with(good(), "/documentation", json!({}));
    assert_eq!(score(&no_readme), 90, "-10 readme; the examples bonus goes with the examples");
    // Without the examples bonus, so that one missing point shows.
    let plain = with(good(), "/documentation", json!({"readme": "README.md"}));
    assert_eq!(score(&plain), 100);
    let services_only = with(plain.clone(), "/dependencies", json!({"services": ["postgres"]}));
    assert_eq!(score(&services_only), 100, "dependencies.services count as runtime needs");
    let top_level_services = with(with(plain.clone(), "/dependencies", json!({})), "/services", json!(["postgres"]));
    assert_eq!(score(&top_level_services), 95, "a top-level services key is not read");
    let deployment_hooks_only = with(plain, "/hooks", json!({"post_deployment": ["deploy.sh"]}));
    assert_eq!(score(&deployment_hooks_only), 95, "deployment hooks do not count");
    let report = check(&bare);
    assert!(!report.passes(DEFAULT_MIN_SCORE));
    assert!(report.reason(DEFAULT_MIN_SCORE).contains("quality score 60 is below the minimum 70"));
}
