//! The Kubernetes objects of one ephemeral test environment (domain.md section 4), rendered by
//! a pure function as typed k8s-openapi objects: the namespace with its quota and limit range,
//! the app's deployment and service, an optional database and Redis, and one job per test
//! command. Names are valid DNS labels and label values are valid label values whatever the
//! execution id; times go in annotations, never in labels.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, LimitRange, LimitRangeItem, LimitRangeSpec, Namespace,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, ResourceQuota,
    ResourceQuotaSpec, ResourceRequirements, Service, ServicePort, ServiceSpec, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use maestro_schemas::ids::format_utc_ms;
use maestro_schemas::proto::execution::{EnvironmentSpec, TestConfig};
use serde::Serialize;
use std::collections::BTreeMap;

/// The label every object carries, for cleanup by selector.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "maestro");
/// The label naming the execution (a valid label value derived from its id).
pub const EXECUTION_LABEL: &str = "maestro.io/execution-id";
/// The old k8s service's labels, kept for tooling that selects by them.
pub const OLD_EXECUTION_LABEL: &str = "quality-fabric.execution-id";
pub const OLD_MANAGED_LABEL: (&str, &str) = ("quality-fabric.managed", "true");
/// The namespace prefix of the old k8s service (contract 4.2).
pub const NAMESPACE_PREFIX: &str = "quality-fabric-";
/// The database types the engine deploys, lower-case.
pub const DATABASES: [&str; 3] = ["postgresql", "mysql", "mongodb"];
/// Most test commands one execution may run (one job each).
pub const MAX_COMMANDS: usize = 50;

/// One rendered object.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Manifest {
    Namespace(Namespace),
    ResourceQuota(ResourceQuota),
    LimitRange(LimitRange),
    Deployment(Deployment),
    Service(Service),
    StatefulSet(StatefulSet),
    Job(Job),
}

impl Manifest {
    fn metadata(&self) -> &ObjectMeta {
        match self {
            Manifest::Namespace(o) => &o.metadata,
            Manifest::ResourceQuota(o) => &o.metadata,
            Manifest::LimitRange(o) => &o.metadata,
            Manifest::Deployment(o) => &o.metadata,
            Manifest::Service(o) => &o.metadata,
            Manifest::StatefulSet(o) => &o.metadata,
            Manifest::Job(o) => &o.metadata,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Manifest::Namespace(_) => "Namespace",
            Manifest::ResourceQuota(_) => "ResourceQuota",
            Manifest::LimitRange(_) => "LimitRange",
            Manifest::Deployment(_) => "Deployment",
            Manifest::Service(_) => "Service",
            Manifest::StatefulSet(_) => "StatefulSet",
            Manifest::Job(_) => "Job",
        }
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }
}

/// What an environment is rendered from.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub execution_id: &'a str,
    pub spec: &'a EnvironmentSpec,
    pub test: &'a TestConfig,
    /// When the environment was admitted (log time) and when it expires.
    pub requested_ms: u64,
    pub expires_ms: u64,
}

fn short_hash(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex()[..8].to_string()
}

/// `text` as a DNS-1123 label of at most `max` characters: lowercase alphanumerics and `-`,
/// alphanumeric at both ends. A text that had to change gets a hash of the original appended,
/// so two ids never map to one name.
pub fn dns_label(text: &str, max: usize) -> String {
    let mapped: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed == text && !text.is_empty() && text.len() <= max {
        return text.to_string();
    }
    let keep = max.saturating_sub(9);
    let head = trimmed.get(..trimmed.len().min(keep)).unwrap_or_default().trim_end_matches('-');
    if head.is_empty() { format!("x{}", short_hash(text)) } else { format!("{head}-{}", short_hash(text)) }
}

/// `text` as a label value: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn label_value(text: &str) -> String {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let valid = text.len() <= 63
        && text.chars().all(ok)
        && text.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && text.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if valid { text.to_string() } else { dns_label(text, 63) }
}

/// The namespace of an execution: `quality-fabric-<execution_id>` as the old service named it
/// (an 8-hex id is a valid DNS label as it is; any other id is made one).
pub fn namespace_of(execution_id: &str) -> String {
    format!("{NAMESPACE_PREFIX}{}", dns_label(execution_id, 63 - NAMESPACE_PREFIX.len()))
}

/// The database a spec asks for, lower-cased as the old service read it; `Err` names a type
/// the engine does not deploy (the old service warned and provisioned without a database).
pub fn database_kind(spec: &EnvironmentSpec) -> Result<Option<String>, String> {
    let Some(kind) = spec.database_type.as_deref().map(str::trim).filter(|k| !k.is_empty()) else { return Ok(None) };
    let lower = kind.to_ascii_lowercase();
    if DATABASES.contains(&lower.as_str()) {
        Ok(Some(lower))
    } else {
        Err(format!(
            "environment_spec.database_type {kind:?} is not one of {}: provisioned without a database",
            DATABASES.join(", ")
        ))
    }
}

/// The name of the job running the `n`-th command (from 1), as the old service named it.
pub fn job_name(n: usize) -> String {
    format!("test-job-{n}")
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
}

fn resources(requests: (&str, &str), limits: (&str, &str)) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", requests.0), ("memory", requests.1)])),
        limits: Some(quantities(&[("cpu", limits.0), ("memory", limits.1)])),
        ..Default::default()
    }
}

/// The app's resources: `resources` of the request when given, else 100m/256Mi to 500m/512Mi.
fn app_resources(spec: &EnvironmentSpec) -> Result<ResourceRequirements, String> {
    match spec.resources_json.as_deref() {
        None => Ok(resources(("100m", "256Mi"), ("500m", "512Mi"))),
        Some(json) => {
            let parsed: ResourceRequirements = serde_json::from_str(json)
                .map_err(|e| format!("environment_spec.resources is not {{requests, limits}}: {e}"))?;
            let known = ["cpu", "memory", "ephemeral-storage"];
            for (name, _) in parsed.requests.iter().chain(&parsed.limits).flatten() {
                if !known.contains(&name.as_str()) {
                    return Err(format!("environment_spec.resources names {name:?}, not one of {}", known.join(", ")));
                }
            }
            Ok(parsed)
        }
    }
}

/// An environment variable name Kubernetes accepts.
fn valid_env_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    !name.is_empty() && name.chars().all(ok) && !name.starts_with(|c: char| c.is_ascii_digit())
}

struct Ctx {
    namespace: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

impl Ctx {
    fn meta(&self, name: &str, component: &str) -> ObjectMeta {
        let mut labels = self.labels.clone();
        labels.insert("app.kubernetes.io/name".into(), name.into());
        labels.insert("app.kubernetes.io/component".into(), component.into());
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            annotations: Some(self.annotations.clone()),
            ..Default::default()
        }
    }

    fn selector(&self, name: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        labels.insert("app.kubernetes.io/name".to_string(), name.to_string());
        labels.insert(EXECUTION_LABEL.to_string(), self.labels[EXECUTION_LABEL].clone());
        labels
    }

    fn pod(&self, name: &str, component: &str, spec: PodSpec) -> PodTemplateSpec {
        let mut meta = self.meta(name, component);
        meta.name = None;
        meta.namespace = None;
        PodTemplateSpec { metadata: Some(meta), spec: Some(spec) }
    }

    fn service(&self, name: &str, component: &str, port: i32, target: i32, headless: bool) -> Manifest {
        Manifest::Service(Service {
            metadata: self.meta(name, component),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: headless.then(|| "None".to_string()),
                selector: Some(self.selector(if name == "app-service" { "app" } else { name })),
                ports: Some(vec![ServicePort {
                    name: Some("main".into()),
                    port,
                    target_port: Some(IntOrString::Int(target)),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

fn env(pairs: &[(&str, String)]) -> Vec<EnvVar> {
    pairs.iter().map(|(k, v)| EnvVar { name: k.to_string(), value: Some(v.clone()), ..Default::default() }).collect()
}

fn container_port(number: i32) -> Option<Vec<ContainerPort>> {
    Some(vec![ContainerPort { container_port: number, protocol: Some("TCP".into()), ..Default::default() }])
}

/// Renders every object of an environment, in apply order (namespace first).
pub fn render(r: &Request<'_>) -> Result<Vec<Manifest>, String> {
    let spec = r.spec;
    if spec.app_image.trim().is_empty() || spec.app_image.chars().any(char::is_whitespace) {
        return Err(format!("environment_spec.app_image {:?} is not an image reference", spec.app_image));
    }
    let app_port = i32::try_from(spec.app_port).ok().filter(|p| (1..=65_535).contains(p));
    let app_port = app_port.ok_or_else(|| format!("environment_spec.app_port {} is not 1-65535", spec.app_port))?;
    if let Some(bad) = spec.env_vars.keys().find(|k| !valid_env_name(k)) {
        return Err(format!("environment_spec.env_vars: {bad:?} is not a valid variable name"));
    }
    if r.test.commands.len() > MAX_COMMANDS {
        return Err(format!("test_config.commands: {} commands, at most {MAX_COMMANDS}", r.test.commands.len()));
    }
    let replicas = i32::try_from(spec.replicas.unwrap_or(1)).ok().filter(|n| (0..=20).contains(n));
    let replicas = replicas.ok_or_else(|| "environment_spec.replicas must be 0-20".to_string())?;
    let app_resources = app_resources(spec)?;
    let namespace = namespace_of(r.execution_id);
    let mut labels = BTreeMap::new();
    labels.insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
    labels.insert(EXECUTION_LABEL.to_string(), label_value(r.execution_id));
    labels.insert(OLD_EXECUTION_LABEL.to_string(), label_value(r.execution_id));
    labels.insert(OLD_MANAGED_LABEL.0.to_string(), OLD_MANAGED_LABEL.1.to_string());
    let mut annotations = BTreeMap::new();
    annotations.insert("maestro.io/execution-id".to_string(), r.execution_id.to_string());
    annotations.insert("maestro.io/requested-at".to_string(), format_utc_ms(r.requested_ms));
    annotations.insert("maestro.io/expires-at".to_string(), format_utc_ms(r.expires_ms));
    let ctx = Ctx { namespace: namespace.clone(), labels, annotations };

    let mut out = vec![namespace_object(&ctx), quota(&ctx), limit_range(&ctx)];
    let mut app_env = env(&[]);
    app_env.extend(spec.env_vars.iter().map(|(k, v)| EnvVar {
        name: k.clone(),
        value: Some(v.clone()),
        ..Default::default()
    }));
    let mut test_env = env(&[("APP_URL", "http://app-service".to_string())]);
    // An unknown database type deploys none (the handler warns in its answer).
    if let Ok(Some(kind)) = database_kind(spec) {
        let (database, url) = database(&ctx, &kind)?;
        out.extend(database);
        app_env.extend(env(&[("DATABASE_URL", url.clone())]));
        test_env.extend(env(&[("DATABASE_URL", url)]));
    }
    if spec.redis_enabled.unwrap_or(false) {
        out.extend(redis(&ctx));
        app_env.extend(env(&[("REDIS_URL", "redis://redis:6379".to_string())]));
        test_env.extend(env(&[("REDIS_URL", "redis://redis:6379".to_string())]));
    }
    out.push(app(&ctx, spec, replicas, app_port, app_env, app_resources));
    out.push(ctx.service("app-service", "app", 80, app_port, false));
    let timeout_minutes = r.test.timeout_minutes.unwrap_or(30);
    for (i, command) in r.test.commands.iter().enumerate() {
        out.push(job(&ctx, i + 1, command, &spec.app_image, timeout_minutes, test_env.clone()));
    }
    Ok(out)
}

fn namespace_object(ctx: &Ctx) -> Manifest {
    let mut meta = ctx.meta(&ctx.namespace, "environment");
    meta.namespace = None;
    Manifest::Namespace(Namespace { metadata: meta, ..Default::default() })
}

fn quota(ctx: &Ctx) -> Manifest {
    Manifest::ResourceQuota(ResourceQuota {
        metadata: ctx.meta("maestro-quota", "environment"),
        spec: Some(ResourceQuotaSpec {
            hard: Some(quantities(&[
                ("requests.cpu", "4"),
                ("requests.memory", "8Gi"),
                ("limits.cpu", "8"),
                ("limits.memory", "16Gi"),
                ("pods", "10"),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn limit_range(ctx: &Ctx) -> Manifest {
    Manifest::LimitRange(LimitRange {
        metadata: ctx.meta("maestro-limits", "environment"),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                min: Some(quantities(&[("cpu", "100m"), ("memory", "128Mi")])),
                max: Some(quantities(&[("cpu", "2"), ("memory", "2Gi")])),
                ..Default::default()
            }],
        }),
    })
}

fn probe(path: &str, port: i32, delay: i32) -> Option<Probe> {
    Some(Probe {
        http_get: Some(HTTPGetAction { path: Some(path.into()), port: IntOrString::Int(port), ..Default::default() }),
        initial_delay_seconds: Some(delay),
        period_seconds: Some(10),
        ..Default::default()
    })
}

fn app(
    ctx: &Ctx,
    spec: &EnvironmentSpec,
    replicas: i32,
    port_number: i32,
    env: Vec<EnvVar>,
    resources: ResourceRequirements,
) -> Manifest {
    let container = Container {
        name: "app".into(),
        image: Some(spec.app_image.clone()),
        ports: container_port(port_number),
        env: Some(env),
        resources: Some(resources),
        liveness_probe: probe("/health", port_number, 10),
        readiness_probe: probe("/health", port_number, 2),
        ..Default::default()
    };
    Manifest::Deployment(Deployment {
        metadata: ctx.meta("app", "app"),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(ctx.selector("app")), ..Default::default() },
            template: ctx.pod("app", "app", PodSpec { containers: vec![container], ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// A database StatefulSet with its headless service, and the URL the app and tests use.
fn database(ctx: &Ctx, kind: &str) -> Result<(Vec<Manifest>, String), String> {
    let (name, image, port, env, mount, url) = match kind {
        "postgresql" => (
            "postgres",
            "postgres:16",
            5432,
            env(&[("POSTGRES_DB", "test".into()), ("POSTGRES_HOST_AUTH_METHOD", "trust".into())]),
            "/var/lib/postgresql/data",
            "postgresql://postgres@postgres:5432/test",
        ),
        "mysql" => (
            "mysql",
            "mysql:8.4",
            3306,
            env(&[("MYSQL_DATABASE", "test".into()), ("MYSQL_ALLOW_EMPTY_PASSWORD", "yes".into())]),
            "/var/lib/mysql",
            "mysql://root@mysql:3306/test",
        ),
        // No credentials: the database lives as long as its test namespace, reachable only in it.
        "mongodb" => (
            "mongodb",
            "mongo:7.0",
            27017,
            env(&[("MONGO_INITDB_DATABASE", "test".into())]),
            "/data/db",
            "mongodb://mongodb:27017/test",
        ),
        other => {
            return Err(format!("environment_spec.database_type {other:?} is not one of {}", DATABASES.join(", ")));
        }
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some("data".into()), ..Default::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(quantities(&[("storage", "1Gi")])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let container = Container {
        name: name.into(),
        image: Some(image.into()),
        ports: container_port(port),
        env: Some(env),
        resources: Some(resources(("250m", "512Mi"), ("1", "1Gi"))),
        volume_mounts: Some(vec![VolumeMount { name: "data".into(), mount_path: mount.into(), ..Default::default() }]),
        ..Default::default()
    };
    let statefulset = Manifest::StatefulSet(StatefulSet {
        metadata: ctx.meta(name, "database"),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name.into()),
            selector: LabelSelector { match_labels: Some(ctx.selector(name)), ..Default::default() },
            template: ctx.pod(name, "database", PodSpec { containers: vec![container], ..Default::default() }),
            volume_claim_templates: Some(vec![claim]),
            ..Default::default()
        }),
        ..Default::default()
    });
    Ok((vec![statefulset, ctx.service(name, "database", port, port, true)], url.to_string()))
}

fn redis(ctx: &Ctx) -> Vec<Manifest> {
    let container = Container {
        name: "redis".into(),
        image: Some("redis:7.2".into()),
        ports: container_port(6379),
        resources: Some(resources(("100m", "128Mi"), ("500m", "256Mi"))),
        ..Default::default()
    };
    let deployment = Manifest::Deployment(Deployment {
        metadata: ctx.meta("redis", "cache"),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(ctx.selector("redis")), ..Default::default() },
            template: ctx.pod("redis", "cache", PodSpec { containers: vec![container], ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    vec![deployment, ctx.service("redis", "cache", 6379, 6379, false)]
}

fn job(ctx: &Ctx, n: usize, command: &str, image: &str, timeout_minutes: u32, env: Vec<EnvVar>) -> Manifest {
    let name = job_name(n);
    let mut meta = ctx.meta(&name, "test");
    meta.annotations.get_or_insert_with(BTreeMap::new).insert("maestro.io/command".into(), command.into());
    let container = Container {
        name: "test".into(),
        image: Some(image.into()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), command.into()]),
        env: Some(env),
        resources: Some(resources(("100m", "256Mi"), ("1000m", "1Gi"))),
        ..Default::default()
    };
    Manifest::Job(Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(1),
            active_deadline_seconds: Some(i64::from(timeout_minutes) * 60),
            ttl_seconds_after_finished: Some(3600),
            template: ctx.pod(
                &name,
                "test",
                PodSpec { restart_policy: Some("Never".into()), containers: vec![container], ..Default::default() },
            ),
            ..Default::default()
        }),
        ..Default::default()
    })
}
