//! The template registry handler: one `TemplateResult` and (for every parsed request) one
//! `TemplateUsageEvent` per request, with the catalogue as a projection of the log. Its state
//! keys and records are in [`super::model`].

use super::access::{Role, authorize};
use super::index::SearchIndex;
use super::manifest::{self, DEFAULT_MIN_SCORE};
use super::model::{TemplateBody, TemplateRecord, key};
use super::search::{Query, TemplateMeta, search};
use super::versions::{self, Stamp};
use crate::contract::{Change, Decision, ELAPSED_MS, Event, Handler, HandlerError, Intent, Output, StateView};
use maestro_schemas::encode::{template_result_json_with, template_usage_json_with};
use maestro_schemas::ids::{derived_id, entry_uuid, naive_iso};
use maestro_schemas::proto::templates::{Operation, TemplateRequest, TemplateResult, TemplateUsageEvent};
use maestro_schemas::{Body, Entry, Event as Typed, Reject, Status};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The projection's name.
pub const NAME: &str = "templates";

/// The handler. Bootstrap admins come from the log's config records (`a/<tenant>\0<user>`).
#[derive(Clone, Debug)]
pub struct Templates {
    pub requests: String,
    pub results: String,
    pub usage: String,
    pub min_score: i64,
    /// A memo of the catalogue's metadata for search (see [`super::index`]).
    pub index: Arc<SearchIndex>,
}

impl Templates {
    pub fn new(streams: &maestro_schemas::StreamSet) -> Templates {
        Templates {
            requests: streams.templates_requests.clone(),
            results: streams.templates_results.clone(),
            usage: streams.templates_usage.clone(),
            min_score: DEFAULT_MIN_SCORE,
            index: Arc::default(),
        }
    }
}

fn json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// What an accepted operation produced.
#[derive(Debug, Default)]
struct Done {
    /// The answer's `result`, as JSON text.
    result: String,
    template_id: Option<String>,
    changes: Vec<Change>,
    intents: Vec<Intent>,
}

impl Done {
    fn new(result: Value, template_id: Option<String>, changes: Vec<Change>) -> Done {
        Done { result: result.to_string(), template_id, changes, intents: Vec::new() }
    }
}

/// An operation's outcome: done, or the reason it was refused.
type Outcome = Result<Done, String>;

struct Request<'a> {
    req: &'a TemplateRequest,
    params: Value,
    entry: &'a Entry,
}

impl Request<'_> {
    fn text(&self, name: &str) -> Option<String> {
        self.params.get(name).and_then(Value::as_str).map(str::to_string)
    }

    fn tenant(&self) -> &str {
        &self.req.tenant_id
    }
}

impl Templates {
    fn role(&self, state: &dyn StateView, tenant: &str, user: &str) -> Option<Role> {
        if state.get(&key("a", tenant, &[user])).is_some() {
            return Some(Role::Admin);
        }
        state.get(&key("g", tenant, &[user])).and_then(|r| Role::parse(std::str::from_utf8(&r).ok()?))
    }

    /// An answer whose `duration_ms` the engine fills in when it publishes: the time from the
    /// request's entry to the answer's publication.
    fn timed_output(&self, stream: &str, data: String, request: &Entry) -> Output {
        Output { elapsed_from_ms: Some(request.id.ms), ..Output::new(stream, vec![("data".into(), data)]) }
    }

    fn respond(&self, r: &Request<'_>, operation: &str, outcome: Outcome) -> Decision {
        let (result, template_id, changes, intents, error) = match outcome {
            Ok(done) => (Some(done.result), done.template_id, done.changes, done.intents, None),
            Err(error) => (None, r.req.template_id.clone(), Vec::new(), Vec::new(), Some(error)),
        };
        let success = error.is_none();
        let result = TemplateResult {
            request_id: r.req.request_id.clone(),
            template_id: template_id.clone(),
            status: if success { "success" } else { "error" }.into(),
            result_json: result,
            error,
            duration_ms: 0,
            timestamp: naive_iso(r.entry.id.ms),
            extra: Default::default(),
        };
        let who = (r.req.tenant_id.as_str(), r.req.user_id.as_str());
        Decision {
            changes,
            outputs: vec![
                self.timed_output(&self.results, template_result_json_with(&result, ELAPSED_MS), r.entry),
                self.usage_output(r.entry, template_id, who, operation, success),
            ],
            intents,
            ignored: None,
        }
    }

    /// An entry that could not be decoded still gets its one (error) result. An operation the
    /// old service did not know is answered as it answered it (`Unknown operation: <op>`, the
    /// request's ids, and a usage event with `success: false`).
    fn rejected(&self, entry: &Entry, reason: &Reject) -> Decision {
        let data = entry.field("data").and_then(|d| serde_json::from_slice::<Value>(d).ok()).unwrap_or_default();
        let text = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_string);
        let request_id = text("request_id").unwrap_or_else(|| derived_id("req", &entry.stream, entry.id));
        let unknown = match (reason.code.as_str(), text("operation"), text("tenant_id"), text("user_id")) {
            ("unknown_operation", Some(op), Some(tenant), Some(user)) => Some((op, tenant, user)),
            _ => None,
        };
        let template_id = unknown.as_ref().and_then(|_| text("template_id"));
        let result = TemplateResult {
            request_id,
            template_id: template_id.clone(),
            status: "error".into(),
            result_json: None,
            error: Some(
                unknown.as_ref().map_or_else(|| reason.to_string(), |(op, ..)| format!("Unknown operation: {op}")),
            ),
            duration_ms: 0,
            timestamp: naive_iso(entry.id.ms),
            extra: Default::default(),
        };
        let mut outputs = vec![self.timed_output(&self.results, template_result_json_with(&result, ELAPSED_MS), entry)];
        if let Some((operation, tenant, user)) = unknown {
            outputs.push(self.usage_output(entry, template_id, (&tenant, &user), &operation, false));
        }
        Decision { outputs, ..Decision::default() }
    }

    /// A request's usage event in the old shape (`template_id` "unknown" when the request had
    /// none), its `duration_ms` filled in on publication.
    fn usage_output(
        &self,
        entry: &Entry,
        template_id: Option<String>,
        (tenant, user): (&str, &str),
        operation: &str,
        success: bool,
    ) -> Output {
        let usage = TemplateUsageEvent {
            event_id: entry_uuid("usage", &entry.stream, entry.id),
            template_id: template_id.filter(|id| !id.is_empty()).unwrap_or_else(|| "unknown".into()),
            tenant_id: tenant.to_string(),
            user_id: user.to_string(),
            operation: operation.to_string(),
            success,
            duration_ms: 0,
            timestamp: naive_iso(entry.id.ms),
            extra: Default::default(),
        };
        self.timed_output(&self.usage, template_usage_json_with(&usage, ELAPSED_MS), entry)
    }
}

impl Handler for Templates {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handle(&self, state: &dyn StateView, event: Event<'_>) -> Result<Decision, HandlerError> {
        let entry = match &event.record.body {
            Body::Entry(entry) => entry,
            Body::Config { admins, .. } => return Ok(bootstrap_admins(state, admins)),
            _ => return Ok(Decision::default()),
        };
        if entry.stream != self.requests {
            return Ok(Decision::default());
        }
        let req = match (&entry.status, event.typed.map(|t| &t.event)) {
            (Status::Accepted, Some(Typed::TemplateRequest(req))) => req,
            (Status::Rejected { reason, .. }, _) => return Ok(self.rejected(entry, reason)),
            _ => return Ok(Decision::default()),
        };
        let operation = Operation::try_from(req.operation).unwrap_or(Operation::Unspecified);
        let name = operation.as_str_name().trim_start_matches("OPERATION_").to_lowercase();
        let params = serde_json::from_str(&req.parameters_json).unwrap_or(Value::Null);
        let r = Request { req, params, entry };
        let held = self.role(state, &req.tenant_id, &req.user_id);
        let outcome = match authorize(&req.user_id, &req.tenant_id, held, operation) {
            Err(denied) => Err(format!("denied: {denied}")),
            Ok(()) => self.operate(state, &r, operation),
        };
        Ok(self.respond(&r, &name, outcome))
    }
}

/// The configured bootstrap admins replace the previous configuration's.
fn bootstrap_admins(state: &dyn StateView, admins: &[(String, String)]) -> Decision {
    let wanted: std::collections::BTreeSet<Vec<u8>> = admins.iter().map(|(t, u)| key("a", t, &[u])).collect();
    let mut changes: Vec<Change> = state
        .scan(b"a/")
        .into_iter()
        .filter(|(k, _)| !wanted.contains(k))
        .map(|(key, _)| Change::Delete { key })
        .collect();
    changes.extend(wanted.into_iter().map(|key| Change::Put { key, value: b"admin".to_vec() }));
    Decision { changes, ..Decision::default() }
}

fn missing(tenant: &str, id: &str) -> String {
    format!("template {id:?} does not exist in tenant {tenant:?}")
}

/// A template's metadata, the source of truth for its counters.
fn load_meta(state: &dyn StateView, tenant: &str, id: &str) -> Result<TemplateMeta, String> {
    state
        .get(&key("m", tenant, &[id]))
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| missing(tenant, id))
}

fn load(state: &dyn StateView, tenant: &str, id: &str) -> Result<TemplateRecord, String> {
    let meta = load_meta(state, tenant, id)?;
    let body = state
        .get(&key("t", tenant, &[id]))
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| missing(tenant, id))?;
    Ok(TemplateRecord { meta, body })
}

/// The old retrieve answer's `template_id`, then `meta`'s members, then `body`'s: a record's
/// serialisation, made from the two stored objects without parsing the body (which holds the
/// template's content).
fn joined_objects(id: &str, meta: &[u8], body: &[u8]) -> Option<String> {
    let meta = meta.strip_prefix(b"{")?.strip_suffix(b"}")?;
    let body = body.strip_prefix(b"{")?;
    if meta.is_empty() || body.len() < 2 {
        return None;
    }
    let id = serde_json::to_string(id).ok()?;
    let mut joined = Vec::with_capacity(16 + id.len() + meta.len() + 1 + body.len());
    joined.extend_from_slice(b"{\"template_id\":");
    joined.extend_from_slice(id.as_bytes());
    joined.push(b',');
    joined.extend_from_slice(meta);
    joined.push(b',');
    joined.extend_from_slice(body);
    String::from_utf8(joined).ok()
}

/// Metadata answer: the record without its body.
fn summary(record: &TemplateRecord) -> Value {
    let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.remove("content");
        map.remove("manifest");
    }
    value
}

impl Templates {
    /// The changes that store `record`: the full record and its search metadata.
    fn store(&self, state: &dyn StateView, record: &TemplateRecord) -> Vec<Change> {
        let (tenant, id) = (&record.body.tenant_id, &record.meta.id);
        let mut changes = vec![Change::Put { key: key("t", tenant, &[id]), value: json_bytes(&record.body) }];
        changes.extend(self.index.change(state, tenant, id, Some(&record.meta)));
        changes
    }

    fn stamp<'a>(&self, r: &'a Request<'_>, time: &'a str) -> Stamp<'a> {
        Stamp {
            tenant: r.tenant(),
            user: &r.req.user_id,
            request_id: &r.req.request_id,
            entry: r.entry.id,
            time_ms: r.entry.id.ms,
            time,
        }
    }

    fn operate(&self, state: &dyn StateView, r: &Request<'_>, operation: Operation) -> Outcome {
        let id = r.req.template_id.clone();
        let require_id = || id.clone().ok_or_else(|| "template_id is required".to_string());
        match operation {
            Operation::Create => self.create(state, r),
            Operation::Update => self.update(state, r, &require_id()?),
            Operation::Delete => self.delete(state, r, &require_id()?),
            Operation::Retrieve => self.retrieve(state, r, &require_id()?),
            Operation::Search => {
                let query: Query =
                    serde_json::from_value(r.params.clone()).map_err(|e| format!("search parameters: {e}"))?;
                let index = self.index.tenant(state, r.tenant());
                let page = search(index.as_ref(), &query)?;
                Ok(Done { result: page.json(), ..Done::default() })
            }
            Operation::Validate => {
                let manifest = r.params.get("manifest").ok_or("parameters.manifest is required")?;
                let report = manifest::check(manifest);
                let passes = report.passes(self.min_score);
                let result = json!({"score": report.score, "failures": report.failures, "passes": passes, "min_score": self.min_score});
                Ok(Done::new(result, id, Vec::new()))
            }
            Operation::Pin | Operation::Unpin => self.pin(state, r, &require_id()?, operation == Operation::Pin),
            Operation::Grant | Operation::Revoke => self.grant(r, operation == Operation::Grant),
            Operation::Versions => {
                let id = require_id()?;
                load(state, r.tenant(), &id)?;
                let versions = versions::list(state, r.tenant(), &id);
                Ok(Done::new(json!({"template_id": id, "versions": versions}), Some(id), Vec::new()))
            }
            Operation::Unspecified => Err("the operation is not known".into()),
        }
    }

    fn delete(&self, state: &dyn StateView, r: &Request<'_>, id: &str) -> Outcome {
        let record = load(state, r.tenant(), id)?;
        let time = naive_iso(r.entry.id.ms);
        let (mut changes, intent) = versions::record(state, self.stamp(r, &time), &record, true);
        changes.push(Change::Delete { key: key("t", r.tenant(), &[id]) });
        changes.extend(self.index.change(state, r.tenant(), id, None));
        let result = json!({
            "template_id": id, "status": "deleted", "message": "Template deleted successfully",
            "deleted": id, "commit": intent.id,
        });
        let done = Done::new(result, Some(id.to_string()), changes);
        Ok(Done { intents: vec![intent], ..done })
    }

    /// The current template, or with `version` (semver or commit id) the one committed then.
    fn retrieve(&self, state: &dyn StateView, r: &Request<'_>, id: &str) -> Outcome {
        let mut meta = load_meta(state, r.tenant(), id)?;
        let body = state.get(&key("t", r.tenant(), &[id])).ok_or_else(|| missing(r.tenant(), id))?;
        // Retrieval counts as use; only the small metadata is rewritten.
        meta.usage_count += 1;
        let changes = self.index.change(state, r.tenant(), id, Some(&meta));
        let current = |wanted: &str| meta.version == wanted;
        // The metadata as the change stores it, so it is serialised once.
        let meta_key = key("m", r.tenant(), &[id]);
        let stored_meta = changes.iter().find_map(|change| match change {
            Change::Put { key, value } if *key == meta_key => Some(value.as_slice()),
            _ => None,
        });
        let result = match r.text("version").filter(|v| !current(v)) {
            None => stored_meta
                .and_then(|meta| joined_objects(id, meta, &body))
                .ok_or_else(|| format!("template {id:?} is stored in a form this engine cannot read"))?,
            Some(wanted) => {
                let (entry, mut file) = versions::at(state, r.tenant(), id, &wanted)?;
                if let Value::Object(map) = &mut file {
                    map.insert("template_id".into(), json!(id));
                    map.insert("commit".into(), json!(entry.commit));
                    map.insert("committed_at".into(), json!(entry.time));
                }
                file.to_string()
            }
        };
        Ok(Done { result, template_id: Some(id.to_string()), changes, ..Done::default() })
    }

    fn create(&self, state: &dyn StateView, r: &Request<'_>) -> Outcome {
        let id = r.req.template_id.clone().unwrap_or_else(|| entry_uuid("template", &r.entry.stream, r.entry.id));
        if state.get(&key("t", r.tenant(), &[&id])).is_some() {
            return Err(format!("template {id:?} already exists"));
        }
        let record = TemplateRecord {
            meta: TemplateMeta {
                id: id.clone(),
                created_at: r.entry.id.ms,
                quality_tier: "standard".into(),
                status: "draft".into(),
                created_by: r.req.user_id.clone(),
                ..TemplateMeta::default()
            },
            body: TemplateBody { tenant_id: r.tenant().to_string(), ..TemplateBody::default() },
        };
        self.apply_fields(state, r, record, true)
    }

    fn update(&self, state: &dyn StateView, r: &Request<'_>, id: &str) -> Outcome {
        let record = load(state, r.tenant(), id)?;
        self.apply_fields(state, r, record, false)
    }

    /// Applies create/update parameters: missing record fields come from the manifest; a new
    /// manifest goes through the quality gate; every accepted change is a new version.
    fn apply_fields(&self, state: &dyn StateView, r: &Request<'_>, mut t: TemplateRecord, creating: bool) -> Outcome {
        if let Some(manifest) = r.params.get("manifest") {
            let report = manifest::check(manifest);
            if !report.passes(self.min_score) {
                return Err(format!("quality gate: {}", report.reason(self.min_score)));
            }
            t.body.manifest = report.normalized;
            t.meta.quality_score = report.score;
        } else if creating {
            return Err("parameters.manifest is required".into());
        }
        let m = t.body.manifest.clone();
        let from = |param: &str, path: &[&str]| -> Option<String> {
            r.text(param)
                .or_else(|| path.iter().try_fold(&m, |v, k| v.get(k)).and_then(Value::as_str).map(str::to_string))
        };
        let name = r.text("name").or_else(|| creating.then(|| from("name", &["name"])).flatten());
        if let Some(name) = name {
            t.meta.name = name;
        }
        if let Some(content) = r.text("content") {
            t.body.content = content;
        }
        t.meta.description = from("description", &["description"]).unwrap_or(t.meta.description);
        t.meta.category = from("category", &["metadata", "category"]).unwrap_or(t.meta.category);
        t.meta.language = from("language", &["metadata", "language"]).unwrap_or(t.meta.language);
        t.meta.framework = from("framework", &["metadata", "framework"]).or(t.meta.framework);
        t.meta.version = from("version", &["version"]).unwrap_or(t.meta.version);
        t.body.templating_engine = from("templating_engine", &["engine"]).unwrap_or(t.body.templating_engine);
        let tags = r.params.get("tags").or_else(|| m.pointer("/metadata/tags"));
        if let Some(tags) = tags.and_then(|t| serde_json::from_value::<Vec<String>>(t.clone()).ok()) {
            t.meta.tags = tags;
        }
        if !(1..=255).contains(&t.meta.name.chars().count()) {
            return Err("name must be 1-255 characters".into());
        }
        if !(10..=1000).contains(&t.meta.description.chars().count()) {
            return Err("description must be 10-1000 characters".into());
        }
        if t.body.content.is_empty() {
            return Err("parameters.content is required".into());
        }
        if semver::Version::parse(&t.meta.version).is_err() {
            return Err(format!("version {:?} is not semver", t.meta.version));
        }
        t.meta.updated_at = r.entry.id.ms;
        let time = naive_iso(r.entry.id.ms);
        let (mut changes, intent) = versions::record(state, self.stamp(r, &time), &t, false);
        changes.extend(self.store(state, &t));
        // The old answer's keys first; the template's own status moves to `template_status`.
        let (status, message) = if creating {
            ("created", "Template created successfully")
        } else {
            ("updated", "Template updated successfully")
        };
        let mut result = json!({"template_id": t.meta.id, "status": status, "message": message});
        if let (Value::Object(map), Value::Object(summary)) = (&mut result, summary(&t)) {
            for (key, value) in summary {
                let key = if key == "status" { "template_status".to_string() } else { key };
                map.entry(key).or_insert(value);
            }
            map.insert("commit".into(), json!(intent.id));
        }
        Ok(Done { intents: vec![intent], ..Done::new(result, Some(t.meta.id.clone()), changes) })
    }

    fn pin(&self, state: &dyn StateView, r: &Request<'_>, id: &str, pinned: bool) -> Outcome {
        let mut record = load(state, r.tenant(), id)?;
        let tier = if pinned { r.text("tier").unwrap_or_else(|| "gold".into()) } else { "standard".into() };
        if !["gold", "silver", "bronze", "standard"].contains(&tier.as_str()) {
            return Err(format!("tier {tier:?} must be gold, silver, bronze or standard"));
        }
        record.meta.is_pinned = pinned;
        record.meta.quality_tier = tier;
        record.body.pin_reason = if pinned { r.text("reason") } else { None };
        Ok(Done::new(summary(&record), Some(id.to_string()), self.store(state, &record)))
    }

    fn grant(&self, r: &Request<'_>, granting: bool) -> Outcome {
        let user = r.text("user").ok_or("parameters.user is required")?;
        let grant_key = key("g", r.tenant(), &[&user]);
        if !granting {
            return Ok(Done::new(json!({"revoked": user}), None, vec![Change::Delete { key: grant_key }]));
        }
        let role = r
            .text("role")
            .and_then(|name| Role::parse(&name))
            .ok_or("parameters.role must be viewer, developer or admin")?;
        let change = Change::Put { key: grant_key, value: role.name().as_bytes().to_vec() };
        Ok(Done::new(json!({"granted": user, "role": role.name()}), None, vec![change]))
    }
}
