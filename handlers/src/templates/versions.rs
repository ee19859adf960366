//! Template versions: every accepted create, update and delete is a version entry in the
//! projection and one commit of the tenant's git history (predicted in [`super::history`] and
//! written by the engine's git effect runner).
//!
//! State keys: `v/<tenant>\0<id>\0<entry>` the version entry, `vb/<tenant>\0<id>\0<entry>` the
//! file as committed (so `retrieve` can serve any version without the repository), and
//! `c/<tenant>\0<commit>` pointing a commit id at its version. `<entry>` is the request's
//! stream entry id, zero-padded so keys sort in stream order. Nothing here depends on the log
//! seq, which changes with how reads interleave the streams: the same requests give the same
//! versions and commit ids whatever the engine's batch sizes.

use super::history::{self, FileChange, one_line};
use super::model::{TemplateRecord, key};
use crate::contract::{Change, Intent, StateView};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One version of a template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionEntry {
    pub version: String,
    pub action: String,
    pub commit: String,
    /// The request's stream entry id.
    pub entry: String,
    pub time: String,
    pub request_id: String,
    pub user_id: String,
}

/// Who made a change, when and why: the request's identity.
#[derive(Clone, Copy, Debug)]
pub struct Stamp<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
    pub request_id: &'a str,
    pub entry: maestro_schemas::EntryId,
    pub time_ms: u64,
    pub time: &'a str,
}

/// The file a template is committed as: what a reviewer wants to diff, without counters.
#[derive(Serialize)]
struct TemplateFile<'a> {
    id: &'a str,
    name: &'a str,
    version: &'a str,
    description: &'a str,
    category: &'a str,
    language: &'a str,
    framework: &'a Option<String>,
    tags: &'a [String],
    templating_engine: &'a str,
    created_by: &'a str,
    manifest: &'a Value,
    content: &'a str,
}

fn file_bytes(t: &TemplateRecord) -> Vec<u8> {
    let file = TemplateFile {
        id: &t.meta.id,
        name: &t.meta.name,
        version: &t.meta.version,
        description: &t.meta.description,
        category: &t.meta.category,
        language: &t.meta.language,
        framework: &t.meta.framework,
        tags: &t.meta.tags,
        templating_engine: &t.body.templating_engine,
        created_by: &t.meta.created_by,
        manifest: &t.body.manifest,
        content: &t.body.content,
    };
    let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Records a new version of `record` (`deleted` = the template was deleted): the version
/// entry, the committed file, the commit's state, and the intent that writes the commit.
pub fn record(state: &dyn StateView, s: Stamp<'_>, record: &TemplateRecord, deleted: bool) -> (Vec<Change>, Intent) {
    let id = &record.meta.id;
    let action = if deleted {
        "delete"
    } else if state.scan(&key("v", s.tenant, &[id, ""])).is_empty() {
        "create"
    } else {
        "update"
    };
    let blob = (!deleted).then(|| file_bytes(record));
    let message = format!(
        "{action} {}\n\nrequest: {}\nentry: {}\nversion: {}\n",
        one_line(id),
        one_line(s.request_id),
        s.entry,
        one_line(&record.meta.version)
    );
    let change = FileChange { tenant: s.tenant, template_id: id, blob, user: s.user, time_ms: s.time_ms, message };
    let (commit, mut changes) = history::commit(state, change);
    let seq = entry_key(s.entry);
    let entry = VersionEntry {
        version: record.meta.version.clone(),
        action: action.into(),
        commit: maestro_schemas::record::hex(&commit.id),
        entry: s.entry.to_string(),
        time: s.time.to_string(),
        request_id: s.request_id.to_string(),
        user_id: s.user.to_string(),
    };
    changes.push(Change::Put {
        key: key("c", s.tenant, &[&entry.commit]),
        value: [id.as_bytes(), b"\0", seq.as_bytes()].concat(),
    });
    changes.push(Change::Put {
        key: key("v", s.tenant, &[id, &seq]),
        value: serde_json::to_vec(&entry).unwrap_or_default(),
    });
    if let Some(blob) = &commit.blob {
        changes.push(Change::Put { key: key("vb", s.tenant, &[id, &seq]), value: blob.clone() });
    }
    let payload = maestro_schemas::codec::encode(&commit).unwrap_or_default();
    let intent = Intent { kind: history::INTENT_KIND.into(), id: entry.commit.clone(), payload };
    (changes, intent)
}

/// The sortable key part of a stream entry id.
fn entry_key(id: maestro_schemas::EntryId) -> String {
    format!("{:020}-{:020}", id.ms, id.seq)
}

/// Every version of a template, oldest first.
pub fn list(state: &dyn StateView, tenant: &str, id: &str) -> Vec<VersionEntry> {
    state.scan(&key("v", tenant, &[id, ""])).into_iter().filter_map(|(_, v)| serde_json::from_slice(&v).ok()).collect()
}

/// The file of `id` as of `wanted`: a commit id, or a semver version (its latest commit).
pub fn at(state: &dyn StateView, tenant: &str, id: &str, wanted: &str) -> Result<(VersionEntry, Value), String> {
    let missing = || format!("version {wanted:?} of {id:?} is not in tenant {tenant:?}'s history");
    let seq = match history::parse_hex(wanted) {
        Some(_) => {
            let target = state.get(&key("c", tenant, &[wanted])).ok_or_else(missing)?;
            let (owner, seq) = target.split_at(target.iter().position(|b| *b == 0).ok_or_else(missing)?);
            if owner != id.as_bytes() {
                return Err(format!("commit {wanted} belongs to another template"));
            }
            String::from_utf8_lossy(&seq[1..]).into_owned()
        }
        None => {
            let latest = list(state, tenant, id).into_iter().rfind(|v| v.version == wanted && v.action != "delete");
            let entry = latest.ok_or_else(missing)?.entry;
            maestro_schemas::EntryId::parse(&entry).map(entry_key).map_err(|_| missing())?
        }
    };
    let entry: VersionEntry =
        state.get(&key("v", tenant, &[id, &seq])).and_then(|v| serde_json::from_slice(&v).ok()).ok_or_else(missing)?;
    let file = state
        .get(&key("vb", tenant, &[id, &seq]))
        .and_then(|v| serde_json::from_slice(&v).ok())
        .ok_or_else(|| format!("commit {} of {id:?} deleted the template", entry.commit))?;
    Ok((entry, file))
}
