//! Engine settings from, lowest precedence first: built-in defaults, a TOML file
//! (`--config FILE`, or `./maestro.toml` when present), `MAESTRO_*` environment variables
//! (`__` separates nested keys: `MAESTRO_STREAMS__K8S_JOBS`, `MAESTRO_LIMITS__MAX_FIELDS`), and
//! flags. A bad value is reported with the place it came from.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use maestro_effects::domains::DomainSettings;
use maestro_engine::config::EngineConfig;
use std::path::{Path, PathBuf};

/// Settings that can also be given as flags.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML settings file (default: ./maestro.toml when it exists). Env: MAESTRO_CONFIG.
    #[arg(long, value_name = "FILE", env = "MAESTRO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Redis to read from [default: redis://127.0.0.1:6379]. Env: MAESTRO_REDIS_URL.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// A seed node of a Redis Cluster (repeatable); any selects cluster mode and `--redis-url`
    /// is not used. Env: MAESTRO_CLUSTER_NODES=[redis://h1:p1,redis://h2:p2].
    #[arg(long = "cluster-node", value_name = "URL")]
    pub cluster_nodes: Vec<String>,
    /// Where the log and projections live [default: ./maestro-data]. Env: MAESTRO_DATA_DIR.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Consumer group [default: maestro-engine]. Env: MAESTRO_GROUP.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// Run as engine I of N members (`I/N`): write only while holding member I's lease in
    /// Redis, wait on it otherwise. Env: MAESTRO_MEMBER.
    #[arg(long, value_name = "I/N")]
    pub member: Option<String>,
    /// Partitions of each stream (1 = today's unpartitioned keys). Env: MAESTRO_PARTITIONS.
    #[arg(long, value_name = "P")]
    pub partitions: Option<u32>,
    /// A bootstrap admin of the template registry (repeatable). Env: MAESTRO_ADMINS=tenant:user,...
    #[arg(long = "admin", value_name = "TENANT:USER")]
    pub admins: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("bad setting: {0}")]
    Bad(Box<figment::Error>),
    #[error("bad setting: {0}")]
    Invalid(String),
}

/// Environment variables that are flags of the binary, not engine settings.
const NOT_ENGINE_SETTINGS: [&str; 4] = ["config", "http", "log_format", "admins"];

/// The settings a file or an environment variable may name: the engine's and the domains'
/// (`MAESTRO_<SETTING>`, or `MAESTRO_<SETTING>__<KEY>` for a key inside one).
fn known_settings() -> Vec<String> {
    let keys = |value: Result<serde_json::Value, serde_json::Error>| match value {
        Ok(serde_json::Value::Object(settings)) => settings.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let mut known: Vec<String> = keys(serde_json::to_value(EngineConfig::default()));
    known.extend(keys(serde_json::to_value(DomainSettings::default())));
    known
}

/// Refuses a key of the settings (a file's, most likely) that neither the engine nor a domain
/// has, naming where it came from. Inner keys (`[streams]`, `[limits]`) are refused by their
/// own types.
fn refuse_unknown_keys(figment: &Figment, known: &[String]) -> Result<(), SettingsError> {
    let all: figment::value::Dict = figment.extract().map_err(|e| SettingsError::Bad(Box::new(e)))?;
    if let Some(key) = all.keys().find(|key| !known.contains(key)) {
        let source = figment.find_metadata(key).map_or_else(String::new, |m| {
            m.source.as_ref().map_or_else(|| format!(" in {}", m.name), |source| format!(" in {} {source}", m.name))
        });
        return Err(SettingsError::Invalid(format!("unknown setting `{key}`{source}")));
    }
    Ok(())
}

/// Whether `name` (without its `MAESTRO_` prefix) names one of `known`.
fn names_a_setting(name: &str, known: &[String]) -> bool {
    let setting = name.split("__").next().unwrap_or(name);
    known.iter().map(String::as_str).chain(NOT_ENGINE_SETTINGS).any(|k| k.eq_ignore_ascii_case(setting))
}

/// `MAESTRO_*` variables that name no setting. Kubernetes sets `MAESTRO_PORT`,
/// `MAESTRO_SERVICE_HOST`, ... in every pod of a namespace with a Service called `maestro`, so
/// these are warned about and left out, not refused; an unknown key in a settings file stays
/// an error.
fn unknown_variables(known: &[String]) -> Vec<String> {
    let mut unknown: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.strip_prefix("MAESTRO_").is_some_and(|rest| !names_a_setting(rest, known)))
        .collect();
    unknown.sort();
    unknown
}

/// Builds the engine configuration.
pub fn load(args: &ConfigArgs) -> Result<EngineConfig, SettingsError> {
    load_with_domains(args).map(|(config, _)| config)
}

/// Builds the engine configuration and the domains' settings, from the same places.
pub fn load_with_domains(args: &ConfigArgs) -> Result<(EngineConfig, DomainSettings), SettingsError> {
    let mut figment = Figment::from(Serialized::defaults(EngineConfig::default()));
    match &args.config {
        Some(path) if !path.exists() => return Err(SettingsError::MissingFile(path.clone())),
        Some(path) => figment = figment.merge(Toml::file(path)),
        None if Path::new("maestro.toml").exists() => figment = figment.merge(Toml::file("maestro.toml")),
        None => {}
    }
    let known = known_settings();
    refuse_unknown_keys(&figment, &known)?;
    let unknown = unknown_variables(&known);
    if !unknown.is_empty() {
        tracing::warn!(variables = %unknown.join(", "), "ignoring MAESTRO_* environment variables that name no setting");
    }
    let env = Env::prefixed("MAESTRO_")
        .ignore(&NOT_ENGINE_SETTINGS)
        .filter(move |name| names_a_setting(name.as_str(), &known));
    figment = figment.merge(env.split("__"));
    if let Some(url) = &args.redis_url {
        figment = figment.merge(Serialized::default("redis_url", url));
    }
    if !args.cluster_nodes.is_empty() {
        figment = figment.merge(Serialized::default("cluster_nodes", &args.cluster_nodes));
    }
    if let Some(dir) = &args.data_dir {
        figment = figment.merge(Serialized::default("data_dir", dir));
    }
    if let Some(member) = &args.member {
        figment = figment.merge(Serialized::default("member", member));
    }
    if let Some(partitions) = args.partitions {
        figment = figment.merge(Serialized::default("partitions", partitions));
    }
    if let Some(group) = &args.group {
        figment = figment.merge(Serialized::default("group", group));
    }
    // MAESTRO_ADMINS is a plain comma-separated list; flags add to the file's and the variable's.
    let mut admins: Vec<String> = std::env::var("MAESTRO_ADMINS")
        .map(|list| list.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    admins.extend(args.admins.iter().cloned());
    if !admins.is_empty() {
        let mut all: Vec<String> = figment.extract_inner("admins").unwrap_or_default();
        all.extend(admins);
        figment = figment.merge(Serialized::default("admins", all));
    }
    let config: EngineConfig = figment.extract().map_err(|e| SettingsError::Bad(Box::new(e)))?;
    config.validate().map_err(SettingsError::Invalid)?;
    let domains: DomainSettings = figment.extract().map_err(|e| SettingsError::Bad(Box::new(e)))?;
    domains.validate().map_err(SettingsError::Invalid)?;
    Ok((config, domains))
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type.
mod tests {
    use super::*;

    #[test]
    fn layers_and_errors_name_their_source() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "maestro.toml",
                "read_count = 7\ngroup = \"from-file\"\n[streams]\nk8s_jobs = \"jobs-x\"\n",
            )?;
            jail.set_env("MAESTRO_GROUP", "from-env");
            let args = ConfigArgs::default();
            let config = load(&args).map_err(|e| e.to_string())?;
            assert_eq!(
                (config.read_count, config.group.as_str(), config.streams.k8s_jobs.as_str()),
                (7, "from-env", "jobs-x")
            );
            let flagged = load(&ConfigArgs { group: Some("from-flag".into()), ..ConfigArgs::default() })
                .map_err(|e| e.to_string())?;
            assert_eq!(flagged.group, "from-flag");
            jail.set_env("MAESTRO_READ_COUNT", "many");
            let err = load(&args).unwrap_err().to_string();
            assert!(err.contains("READ_COUNT") && err.contains("MAESTRO_"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn variables_that_name_no_setting_are_left_out_and_named_but_a_files_unknown_key_is_an_error() {
        figment::Jail::expect_with(|jail| {
            // What Kubernetes sets for a Service called `maestro`.
            jail.set_env("MAESTRO_PORT", "tcp://10.0.0.7:9090");
            jail.set_env("MAESTRO_SERVICE_HOST", "10.0.0.7");
            jail.set_env("MAESTRO_PORT_9090_TCP_ADDR", "10.0.0.7");
            jail.set_env("MAESTRO_GROUP", "from-env");
            let config = load(&ConfigArgs::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.group, "from-env");
            assert_eq!(
                unknown_variables(&known_settings()),
                ["MAESTRO_PORT", "MAESTRO_PORT_9090_TCP_ADDR", "MAESTRO_SERVICE_HOST"]
            );
            jail.create_file("maestro.toml", "port = 9090\n")?;
            let err = load(&ConfigArgs::default()).unwrap_err().to_string();
            assert!(err.contains("port"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_domains_settings_come_from_the_same_places_and_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("maestro.toml", "max_active_environments = 3\nread_count = 9\n")?;
            jail.set_env("MAESTRO_EXECUTION_RUNNERS", "[ci-runner]");
            jail.set_env("MAESTRO_ADMINS", "acme:alice, acme:bob");
            let args = ConfigArgs { admins: vec!["globex:carol".into()], ..ConfigArgs::default() };
            let (config, domains) = load_with_domains(&args).map_err(|e| e.to_string())?;
            assert_eq!(config.read_count, 9);
            assert_eq!(domains.max_active_environments, 3);
            assert_eq!(domains.execution_runners, ["ci-runner"]);
            assert_eq!(domains.admins, ["acme:alice", "acme:bob", "globex:carol"]);
            jail.set_env("MAESTRO_MAX_ACTIVE_ENVIRONMENTS", "0");
            let err = load(&ConfigArgs::default()).unwrap_err().to_string();
            assert!(err.contains("max_active_environments"), "{err}");
            jail.create_file("maestro.toml", "max_active_environment = 3\n")?;
            let err = load(&ConfigArgs::default()).unwrap_err().to_string();
            assert!(err.contains("unknown setting `max_active_environment`") && err.contains("maestro.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_and_a_shared_key_are_clear_errors() {
        let args = ConfigArgs { config: Some("/nonexistent/maestro.toml".into()), ..ConfigArgs::default() };
        assert!(load(&args).unwrap_err().to_string().contains("does not exist"));
        figment::Jail::expect_with(|jail| {
            jail.set_env("MAESTRO_STREAMS__K8S_STATUS", "maestro:streams:k8s:results");
            let err = load(&ConfigArgs::default()).unwrap_err().to_string();
            assert!(err.contains("configured for two roles"), "{err}");
            Ok(())
        });
    }
}
