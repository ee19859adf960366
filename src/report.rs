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
