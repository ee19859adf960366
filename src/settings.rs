//! Engine settings from, lowest precedence first: built-in defaults, a TOML file
//! (`--config FILE`, or `./maestro.toml` when present), `MAESTRO_*` environment variables
//! (`__` separates nested keys: `MAESTRO_STREAMS__K8S_JOBS`, `MAESTRO_LIMITS__MAX_FIELDS`), and
//! flags. A bad value is reported with the place it came from.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
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
    /// Where the log and projections live [default: ./maestro-data]. Env: MAESTRO_DATA_DIR.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Consumer group [default: maestro-engine]. Env: MAESTRO_GROUP.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
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

/// Builds the engine configuration.
pub fn load(args: &ConfigArgs) -> Result<EngineConfig, SettingsError> {
    let mut figment = Figment::from(Serialized::defaults(EngineConfig::default()));
    match &args.config {
        Some(path) if !path.exists() => return Err(SettingsError::MissingFile(path.clone())),
        Some(path) => figment = figment.merge(Toml::file(path)),
        None if Path::new("maestro.toml").exists() => figment = figment.merge(Toml::file("maestro.toml")),
        None => {}
    }
    figment = figment.merge(Env::prefixed("MAESTRO_").ignore(&NOT_ENGINE_SETTINGS).split("__"));
    if let Some(url) = &args.redis_url {
        figment = figment.merge(Serialized::default("redis_url", url));
    }
    if let Some(dir) = &args.data_dir {
        figment = figment.merge(Serialized::default("data_dir", dir));
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
    Ok(config)
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
