//! Template history and tenant isolation through a real redis-server and the engine binary:
//! versions name git commits that libgit2 wrote, `retrieve` serves old versions, rebuilding
//! the repository from the log gives the live commit ids, replay equals live, and generated
//! cross-tenant requests are all refused without changing any tenant's catalogue (S1).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use maestro_handlers::templates::handler::NAME as TEMPLATES;
use maestro_handlers::templates::model::tenant_of;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const REQUESTS: &str = "maestro:streams:templates:requests";
const RESULTS: &str = "maestro:streams:templates:results";

fn send(conn: &mut redis::Connection, data: Value) -> String {
    redis::cmd("XADD").arg(REQUESTS).arg("*").arg("data").arg(data.to_string()).query::<String>(conn).unwrap()
}

fn req(id: &str, op: &str, tenant: &str, user: &str, template: Option<&str>, parameters: Value) -> Value {
    let mut data =
        json!({"request_id": id, "operation": op, "tenant_id": tenant, "user_id": user, "parameters": parameters});
    if let Some(template) = template {
        data["template_id"] = json!(template);
    }
    data
}

fn results(conn: &mut redis::Connection) -> BTreeMap<String, Value> {
    read_stream(conn, RESULTS)
        .into_iter()
        .map(|(_, f)| serde_json::from_str::<Value>(&f["data"]).unwrap())
        .map(|v| (v["request_id"].as_str().unwrap().to_string(), v))
        .collect()
}

fn body(seed: u64, bytes: usize) -> String {
    maestro::traffic::template_body(&mut maestro::traffic::Rng::new(seed), bytes)
}

#[test]
fn versions_are_git_commits_that_rebuild_identically_from_the_log() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut engine = EngineProc::start(&server.url(), &dir, &[("MAESTRO_ADMINS", "acme:alice,globex:gina")]);
    let (v1, v2) = (body(1, 8_000), body(2, 30_000));
    let first_id = send(
        &mut conn,
        req(
            "h1",
            "create",
            "acme",
            "alice",
            Some("tpl-api"),
            json!({"name": "api", "content": v1, "manifest": manifest("api")}),
        ),
    );
    send(&mut conn, req("h2", "update", "acme", "alice", Some("tpl-api"), json!({"content": v2, "version": "1.1.0"})));
    send(
        &mut conn,
        req(
            "h3",
            "create",
            "acme",
            "alice",
            Some("tpl-cli"),
            json!({"name": "cli", "content": v1, "manifest": manifest("cli")}),
        ),
    );
    send(&mut conn, req("h4", "delete", "acme", "alice", Some("tpl-cli"), json!({})));
    send(
        &mut conn,
        req(
            "h5",
            "create",
            "globex",
            "gina",
            Some("tpl-api"),
            json!({"name": "api", "content": v2, "manifest": manifest("api")}),
        ),
    );
    send(&mut conn, req("h6", "versions", "acme", "alice", Some("tpl-api"), json!({})));
    wait_drained(&mut conn, Duration::from_secs(30));
    let versions = results(&mut conn)["h6"]["result"]["versions"].as_array().unwrap().clone();
    assert_eq!(versions.len(), 2, "{versions:?}");
    let (c1, c2) = (versions[0]["commit"].as_str().unwrap(), versions[1]["commit"].as_str().unwrap());
    send(&mut conn, req("h7", "retrieve", "acme", "alice", Some("tpl-api"), json!({"version": c1})));
    send(&mut conn, req("h8", "retrieve", "acme", "alice", Some("tpl-api"), json!({"version": "1.0.0"})));
    send(&mut conn, req("h9", "retrieve", "acme", "alice", Some("tpl-api"), json!({})));
    send(&mut conn, req("h10", "retrieve", "globex", "gina", Some("tpl-api"), json!({"version": c1})));
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());

    let results = results(&mut conn);
    assert_eq!(results["h7"]["result"]["content"], v1.as_str(), "retrieve by commit id serves that version");
    assert_eq!(results["h7"]["result"]["commit"], c1);
    assert_eq!(results["h8"]["result"]["content"], v1.as_str(), "retrieve by semver serves its latest commit");
    assert_eq!(results["h9"]["result"]["content"], v2.as_str());
    assert!(results["h10"]["error"].as_str().unwrap().contains("not in tenant \"globex\""), "{}", results["h10"]);
    assert_eq!(results["h4"]["status"], "success");

    // The live repository holds exactly the predicted commits, as libgit2 wrote them.
    let repo = git2::Repository::open_bare(dir.join("history.git")).unwrap();
    let head = repo.find_reference("refs/heads/tenants/acme").unwrap().peel_to_commit().unwrap();
    let chain: Vec<git2::Commit<'_>> = std::iter::successors(Some(head), |c| c.parents().next()).collect();
    assert_eq!(chain.len(), 4, "create, update, create, delete: one commit each");
    let second = repo.find_commit(git2::Oid::from_str(c2).unwrap()).unwrap();
    assert_eq!(second.author().name().ok(), Some("alice"));
    let entry_ms: u64 = first_id.split('-').next().unwrap().parse().unwrap();
    let first = repo.find_commit(git2::Oid::from_str(c1).unwrap()).unwrap();
    assert_eq!(first.time().seconds(), (entry_ms / 1000) as i64, "commit time is the entry's time");
    assert!(first.message().unwrap().contains("request: h1"), "{:?}", first.message());
    let tree = second.tree().unwrap();
    let file = tree
        .iter()
        .flat_map(|shard| repo.find_tree(shard.id()).unwrap().iter().map(|e| e.id()).collect::<Vec<_>>())
        .next()
        .unwrap();
    let file: Value = serde_json::from_slice(repo.find_blob(file).unwrap().content()).unwrap();
    assert_eq!(file["content"], v2.as_str());
    assert_eq!(file["version"], "1.1.0");
    // The deleted template's file is gone from the tip, kept in the commit before.
    assert_eq!(chain[0].tree().unwrap().iter().map(|s| repo.find_tree(s.id()).unwrap().len()).sum::<usize>(), 1);

    // Two rebuilds from the log equal each other and the live repository.
    let data_dir = dir.to_str().unwrap();
    for into in ["rebuild-a", "rebuild-b"] {
        let into = data.path().join(into);
        let (code, out, err) =
            maestro(&["replay", "history", "--data-dir", data_dir, "--into", into.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{out}{err}");
        assert_eq!(out.matches("= live").count(), 2, "{out}");
    }
    let (code, out, err) = maestro(&["replay", "check", "--data-dir", data_dir]);
    assert_eq!(code, Some(0), "replay equals live: {out}{err}");
    assert_eq!(out.matches(" equal").count(), 5, "{out}");

    // The bodies (8 and 30 KB) are files beside sled. Damaged in place, at the same length,
    // they are named by the check.
    let values = dir.join(maestro_engine::log::VALUE_FILES_DIR);
    let files = value_files(&values);
    assert!(files.len() >= 4, "bodies and committed files as value files: {files:?}");
    for file in &files {
        let mut bytes = std::fs::read(file).unwrap();
        bytes[100] ^= 1;
        std::fs::write(file, &bytes).unwrap();
    }
    let named = |text: &str| files.iter().any(|f| text.contains(f.file_name().unwrap().to_str().unwrap()));
    let (code, out, err) = maestro(&["replay", "check", "--data-dir", data_dir]);
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(named(&err) && err.contains("replay rebuild"), "{out}{err}");
    // The engine on the damaged store answers nothing it cannot read (a template is not
    // "missing" because its body is damaged): the batch stops, is retried, and the log names
    // the file.
    let admins = [("MAESTRO_ADMINS", "acme:alice,globex:gina")];
    // With one delivery allowed, a failed batch counted as a crash would quarantine the record
    // at the first retry: it must not, as the record is not at fault.
    let mut engine =
        EngineProc::start(&server.url(), &dir, &[admins[0], ("MAESTRO_MAX_DELIVERIES", "1"), ("RUST_LOG", "info")]);
    send(&mut conn, req("d1", "retrieve", "acme", "alice", Some("tpl-api"), json!({})));
    // Three failures: the live batch, then two catch-up attempts (the second would quarantine).
    let failures = |text: &str| text.matches(values.to_str().unwrap()).count();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while failures(&engine.stderr()) < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(named(&engine.stderr()), "{}", engine.stderr());
    assert!(!engine.stderr().contains("quarantined"), "{}", engine.stderr());
    assert!(!self::results(&mut conn).contains_key("d1"));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    let orphan_bytes = b"a value no state refers to any more".repeat(200);
    let orphan_name = blake3::hash(&orphan_bytes).to_hex().to_string();
    let orphan = values.join(&orphan_name[..2]).join(&orphan_name);
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, &orphan_bytes).unwrap();
    let (code, out, err) = maestro(&["replay", "rebuild", "--data-dir", data_dir]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("REPAIRED: the live state could not be read"), "{out}");
    // A value file nothing refers to (as a body replaced in a later batch leaves) is removed;
    // the check below reads every other value.
    assert!(out.contains(&format!("{} in use, 1 that nothing refers to removed", files.len())), "{out}");
    assert!(!orphan.exists());
    let (code, out, err) = maestro(&["replay", "check", "--data-dir", data_dir]);
    assert_eq!(code, Some(0), "repaired: {out}{err}");
    // The rebuild stopped where the engine had: the engine now answers the retrieve it could
    // not, with the body as it was stored.
    let mut engine = EngineProc::start(&server.url(), &dir, &admins);
    wait_drained(&mut conn, Duration::from_secs(30));
    let answer = &self::results(&mut conn)["d1"];
    assert_eq!(answer["status"], "success", "{answer}");
    assert_eq!(answer["result"]["content"], v2.as_str());
    assert!(engine.terminate().success(), "{}", engine.stderr());
}

/// Every file under `dir`.
fn value_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(value_files(&entry.path())),
            _ => out.push(entry.path()),
        }
    }
    out
}

/// Per-tenant hash of the catalogue projection.
fn tenant_hashes(data_dir: &Path) -> BTreeMap<String, String> {
    let (_dir, log) = maestro_replay::open_log(data_dir).unwrap();
    let store = log.store().unwrap();
    let mut hashers: BTreeMap<String, blake3::Hasher> = BTreeMap::new();
    for (key, value) in store.entries(TEMPLATES).unwrap() {
        let tenant = String::from_utf8_lossy(tenant_of(&key).unwrap()).into_owned();
        let hasher = hashers.entry(tenant).or_default();
        hasher.update(&(key.len() as u64).to_le_bytes());
        hasher.update(&key);
        hasher.update(&(value.len() as u64).to_le_bytes());
        hasher.update(&value);
    }
    hashers.into_iter().map(|(t, h)| (t, h.finalize().to_hex().to_string())).collect()
}

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

/// A request by a user of `from` aimed at tenant `to`'s data: either sent in tenant `to`, where
/// the user holds no role, or sent in its own tenant naming `to`'s template ids.
#[derive(Clone, Debug)]
struct Attack {
    from: usize,
    to: usize,
    in_target_tenant: bool,
    op: &'static str,
    template: usize,
}

fn attack_strategy() -> impl Strategy<Value = Attack> {
    let ops = prop::sample::select(vec![
        "retrieve", "search", "update", "delete", "grant", "revoke", "pin", "unpin", "versions", "create",
    ]);
    (0..3usize, 1..3usize, any::<bool>(), ops, 0..3usize).prop_map(|(from, shift, in_target_tenant, op, template)| {
        Attack { from, to: (from + shift) % 3, in_target_tenant, op, template }
    })
}

#[test]
fn generated_cross_tenant_requests_are_all_refused_and_change_nothing() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let admins = "acme:admin-acme,globex:admin-globex,initech:admin-initech";
    let mut engine = EngineProc::start(&server.url(), &dir, &[("MAESTRO_ADMINS", admins)]);
    let content = body(7, 4_000);
    for tenant in TENANTS {
        let admin = format!("admin-{tenant}");
        for t in 0..3 {
            let (id, name) = (format!("{tenant}-tpl-{t}"), format!("{tenant}-secret-{t}"));
            let params = json!({"name": name, "content": content, "manifest": manifest(&name)});
            send(&mut conn, req(&format!("seed-{id}"), "create", tenant, &admin, Some(&id), params));
        }
        let grant = json!({"user": format!("dev-{tenant}"), "role": "developer"});
        send(&mut conn, req(&format!("seed-grant-{tenant}"), "grant", tenant, &admin, None, grant));
    }
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    let before = tenant_hashes(&dir);
    assert_eq!(before.len(), 3, "{before:?}");

    let mut runner = TestRunner::deterministic();
    let attacks = prop::collection::vec(attack_strategy(), 300).new_tree(&mut runner).unwrap().current();
    let mut engine = EngineProc::start(&server.url(), &dir, &[("MAESTRO_ADMINS", admins)]);
    for (i, a) in attacks.iter().enumerate() {
        let (from, to) = (TENANTS[a.from], TENANTS[a.to]);
        // Admins and developers of their own tenant: the strongest users an attacker can be.
        let user = if i % 2 == 0 { format!("admin-{from}") } else { format!("dev-{from}") };
        // Grants, revokes and creates in one's own tenant are legitimate: those always go to
        // the target tenant.
        let in_target = a.in_target_tenant || matches!(a.op, "grant" | "revoke" | "create");
        let tenant = if in_target { to } else { from };
        let target = format!("{to}-tpl-{}", a.template);
        let params = match a.op {
            "search" => json!({"query": format!("{to}-secret")}),
            "grant" | "revoke" => json!({"user": user, "role": "admin"}),
            "update" => json!({"content": "overwritten"}),
            "create" => json!({"name": "x", "content": "y", "manifest": manifest("x")}),
            _ => json!({}),
        };
        let template = (!matches!(a.op, "search" | "grant" | "revoke")).then_some(target.as_str());
        send(&mut conn, req(&format!("attack-{i}"), a.op, tenant, &user, template, params));
    }
    wait_drained(&mut conn, Duration::from_secs(60));
    assert!(engine.terminate().success(), "{}", engine.stderr());

    let results = results(&mut conn);
    let attacks_sent: Vec<&Value> =
        results.iter().filter(|(id, _)| id.starts_with("attack-")).map(|(_, v)| v).collect();
    assert!(attacks_sent.len() > 150, "only {} attacks were generated", attacks_sent.len());
    let (mut denied, mut not_found, mut empty_searches) = (0, 0, 0);
    for result in &attacks_sent {
        let text = result.to_string();
        assert!(!text.contains("secret") && !text.contains(&content[..200]), "an answer leaked data: {text}");
        let error = result["error"].as_str().unwrap_or_default();
        if result["status"] == "success" {
            // The one request that may succeed: a search in one's own tenant, which finds nothing.
            assert_eq!(result["result"]["total"], 0, "a search saw another tenant: {text}");
            empty_searches += 1;
        } else if error.starts_with("denied:") {
            denied += 1;
        } else {
            assert!(error.contains("does not exist in tenant"), "unexpected refusal: {text}");
            not_found += 1;
        }
    }
    assert!(denied > 100 && not_found > 10 && empty_searches > 5, "{denied} {not_found} {empty_searches}");
    assert_eq!(tenant_hashes(&dir), before, "no tenant's catalogue changed");
}
