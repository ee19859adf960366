//! Human-readable summaries of the template projections, for the demo and for operators.

use maestro_engine::store::Store;
use maestro_handlers::templates::handler::NAME as TEMPLATES;
use maestro_handlers::templates::usage::{NAME as USAGE, Stats};
use std::collections::BTreeMap;

/// Templates, versions and commits per tenant.
pub fn print_catalogue(store: &Store) -> anyhow::Result<()> {
    let mut tenants: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for (key, value) in store.entries(TEMPLATES)? {
        let Some((kind, rest)) = key.split_first_chunk::<2>() else { continue };
        let tenant = String::from_utf8_lossy(rest.split(|b| *b == 0).next().unwrap_or_default()).into_owned();
        let slot = match kind {
            b"t/" => 0,
            b"v/" => 1,
            b"hh" if value.len() == 20 => 2,
            _ => continue,
        };
        let tenant = if slot == 2 { tenant.trim_start_matches('/').to_string() } else { tenant };
        tenants.entry(tenant).or_default()[slot] += 1;
    }
    println!(
        "\ntemplate catalogue (projection `{TEMPLATES}`; history in <data dir>/history.git, one branch per tenant)"
    );
    println!("{:<12} {:>9} {:>9} {:>8}", "tenant", "templates", "versions", "branch");
    for (tenant, [templates, versions, branch]) in &tenants {
        println!("{tenant:<12} {templates:>9} {versions:>9} {:>8}", if *branch > 0 { "yes" } else { "-" });
    }
    Ok(())
}

/// Usage per operation and the busiest templates, from the usage analytics projection.
pub fn print_usage(store: &Store) -> anyhow::Result<()> {
    let mut operations = Vec::new();
    let mut templates = Vec::new();
    for (key, value) in store.entries(USAGE)? {
        let stats: Stats = serde_json::from_slice(&value)?;
        let name = String::from_utf8_lossy(key.get(2..).unwrap_or_default()).replace('\0', "/");
        match key.get(..2) {
            Some(b"o/") => operations.push((name, stats)),
            Some(b"p/") => templates.push((name, stats)),
            _ => {}
        }
    }
    templates.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
    println!("\ntemplate usage (projection `{USAGE}`, from the usage stream entries in the log)");
    println!("{:<28} {:>8} {:>8} {:>8} {:>8}", "operation", "requests", "success", "p50 ms", "p99 ms");
    let row = |name: &str, s: &Stats| {
        println!(
            "{name:<28} {:>8} {:>7.1}% {:>8} {:>8}",
            s.count,
            100.0 * s.success_rate(),
            s.percentile(50.0),
            s.percentile(99.0)
        )
    };
    for (name, stats) in &operations {
        row(name, stats);
    }
    println!("busiest templates (tenant/template):");
    // Searches and validations name no template; they are counted per operation above.
    for (name, stats) in templates.iter().filter(|(n, _)| !n.ends_with("/unknown")).take(5) {
        row(name, stats);
    }
    Ok(())
}

/// The healing scenario's repairs and the statistics of the healing projection.
pub fn print_healing(store: &Store, orchestrator: &str) -> anyhow::Result<()> {
    use maestro_handlers::healing::handler::NAME as HEALING;
    use maestro_handlers::healing::model::{Repair, Stats, StrategyStats, stats_key};
    let entries: BTreeMap<Vec<u8>, Vec<u8>> = store.entries(HEALING)?.into_iter().collect();
    let mut repairs: Vec<Repair> = entries
        .iter()
        .filter(|(k, _)| k.starts_with(b"r/"))
        .filter_map(|(_, v)| serde_json::from_slice::<Repair>(v).ok())
        .filter(|r| r.orchestrator_id == orchestrator)
        .collect();
    repairs.sort_by(|a, b| (a.requested_ms, &a.entry_id).cmp(&(b.requested_ms, &b.entry_id)));
    println!("\nhealing (projection `{HEALING}`): repairs of orchestrator {orchestrator}");
    println!("{:<34} {:<18} {:<25} {:>5} {:<18} {:<9}", "test file", "class", "strategy", "conf", "decision", "status");
    for r in &repairs {
        // The file's name: requests name it relative to the project or by its absolute path.
        let file = r.error.file.as_deref().map_or("-", |f| f.rsplit('/').next().unwrap_or(f));
        println!(
            "{file:<34} {:<18} {:<25} {:>5} {:<18} {:<9}",
            r.failure_class.as_deref().unwrap_or("-"),
            r.strategy.as_deref().unwrap_or("-"),
            r.confidence_score.map_or("-".into(), |c| format!("{c:.2}")),
            r.decision.as_deref().unwrap_or("-"),
            r.status.name()
        );
    }
    let stats = |key: &[u8]| entries.get(key).and_then(|v| serde_json::from_slice::<Stats>(v).ok()).unwrap_or_default();
    println!(
        "\n{:<28} {:>8} {:>9} {:>9} {:>6} {:>7} {:>8}",
        "statistics", "detected", "attempted", "succeeded", "failed", "skipped", "success"
    );
    for (name, s) in
        [("this orchestrator", stats(&stats_key(orchestrator))), ("all (generated traffic too)", stats(b"g"))]
    {
        println!(
            "{name:<28} {:>8} {:>9} {:>9} {:>6} {:>7} {:>7.1}%",
            s.errors_detected,
            s.repairs_attempted,
            s.succeeded,
            s.failed,
            s.skipped,
            100.0 * s.success_rate
        );
    }
    println!("\n{:<25} {:>8} {:>9} {:>15}", "strategy", "attempts", "successes", "mean confidence");
    for (key, value) in entries.iter().filter(|(k, _)| k.starts_with(b"k/")) {
        let s: StrategyStats = serde_json::from_slice(value)?;
        println!(
            "{:<25} {:>8} {:>9} {:>15.3}",
            String::from_utf8_lossy(&key[2..]),
            s.attempts,
            s.successes,
            s.mean_confidence
        );
    }
    Ok(())
}

/// Ephemeral test environments by status, and the ones with job results.
pub fn print_environments(store: &Store) -> anyhow::Result<()> {
    use maestro_handlers::execution::handler::NAME as EXECUTION;
    use maestro_handlers::execution::model::Environment;
    let mut environments: Vec<Environment> = store
        .entries(EXECUTION)?
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"x/"))
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect();
    environments.sort_by(|a, b| a.execution_id.cmp(&b.execution_id));
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    for env in &environments {
        *by_status.entry(env.status.name()).or_default() += 1;
    }
    println!("\ntest environments (projection `{EXECUTION}`; no cluster here: the demo played the runner for 02-04)");
    println!("by status: {by_status:?}");
    println!("{:<14} {:<13} {:<36} {:>5}  path", "execution", "status", "namespace", "jobs");
    for env in environments.iter().filter(|e| e.execution_id.starts_with("demo-exec-")) {
        let path: Vec<&str> = env.transitions.iter().map(|(s, _)| s.name()).collect();
        let passed = env.results.iter().filter(|r| r["success"] == true).count();
        let jobs = if env.results.is_empty() { "-".to_string() } else { format!("{passed}/{}", env.results.len()) };
        println!(
            "{:<14} {:<13} {:<36} {jobs:>5}  {}",
            env.execution_id,
            env.status.name(),
            env.namespace,
            path.join(" > ")
        );
    }
    Ok(())
}
