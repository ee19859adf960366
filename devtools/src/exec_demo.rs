//! The demo's execution scenario: twelve test environments, a short-lived one that expires on
//! logged time, and, since no cluster runs here, the demo publishing the facts a cluster's
//! effect runner would (ready, running, results, completed or failed) for three of them. (The
//! cap and its queue are shown by `tests/execution.rs`; the demo raises the cap, because its
//! compressed traffic asks for hundreds of environments at once.)

use maestro_schemas::StreamSet;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn xadd(conn: &mut redis::Connection, stream: &str, fields: &[(&str, String)]) -> anyhow::Result<()> {
    crate::traffic::xadd(conn, stream, fields)?;
    Ok(())
}

/// The engine's own status updates so far, as (execution id, status).
fn engine_statuses(conn: &mut redis::Connection, stream: &str) -> anyhow::Result<Vec<(String, String)>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query(conn)?;
    Ok(reply
        .ids
        .iter()
        .filter(|e| e.map.contains_key("origin"))
        .map(|e| (e.get("execution_id").unwrap_or_default(), e.get("status").unwrap_or_default()))
        .collect())
}

fn wait_for(
    conn: &mut redis::Connection,
    stream: &str,
    what: &str,
    done: impl Fn(&[(String, String)]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let statuses = engine_statuses(conn, stream)?;
        if done(&statuses) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the execution scenario did not see {what} within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fact(conn: &mut redis::Connection, streams: &StreamSet, id: &str, status: &str) -> anyhow::Result<()> {
    xadd(conn, &streams.k8s_status, &crate::traffic::status_fact(id, status))
}

/// Runs the scenario against a running engine.
pub fn run(conn: &mut redis::Connection, streams: &StreamSet) -> anyhow::Result<()> {
    let databases = [Some("postgresql"), Some("mysql"), None];
    for i in 1..=12 {
        let mut test_config =
            json!({"commands": ["pytest -x tests/api", "pytest tests/integration"], "ttl_minutes": 60});
        if i == 1 {
            // One short-lived environment shows TTL expiry on logged time.
            test_config = json!({"commands": ["pytest -x"], "ttl_seconds": 2});
        }
        let spec = json!({"app_image": format!("registry.example.com/shop/api:1.{i}.0"), "app_port": 8080,
            "database_type": databases[i % 3], "redis_enabled": i % 2 == 0, "replicas": 1});
        let payload =
            json!({"execution_id": format!("demo-exec-{i:02}"), "environment_spec": spec, "test_config": test_config});
        xadd(conn, &streams.k8s_jobs, &[("type", "execute_ephemeral_test".into()), ("payload", payload.to_string())])?;
    }
    wait_for(conn, &streams.k8s_status, "twelve environments provisioning", |s| {
        s.iter().filter(|(e, st)| e.starts_with("demo-exec-") && st == "provisioning").count() == 12
    })?;
    // What a cluster's runner would report for environments 2 to 4.
    for i in 2..=4 {
        let id = format!("demo-exec-{i:02}");
        fact(conn, streams, &id, "ready")?;
        fact(conn, streams, &id, "running")?;
        let passed = i != 4;
        let jobs: Vec<Value> = ["pytest -x tests/api", "pytest tests/integration"]
            .iter()
            .enumerate()
            .map(|(n, command)| json!({"job_name": format!("test-job-{}", n + 1), "command": command,
                "success": passed || n == 0, "output": if passed || n == 0 { "41 passed in 6.2s" } else { "1 failed, 40 passed" },
                "duration": 6.2 + n as f64}))
            .collect();
        let status = if passed { "completed" } else { "failed" };
        let result = json!({"execution_id": id, "namespace": format!("quality-fabric-{id}"), "test_results": jobs,
            "status": status})
        .to_string();
        let fields = [
            ("type", "execution_result".to_string()),
            ("execution_id", id.clone()),
            ("result", result),
            ("timestamp", "2026-11-28T10:05:00".to_string()),
            ("runner", crate::traffic::ENGINE_RUNNER.to_string()),
        ];
        xadd(conn, &streams.k8s_results, &fields)?;
        fact(conn, streams, &id, if passed { "completed" } else { "failed" })?;
    }
    wait_for(conn, &streams.k8s_status, "the short-lived environment expired", |s| {
        s.iter().any(|(e, st)| e == "demo-exec-01" && st == "expired")
    })
}
