//! The git history of a tenant's templates, predicted by a pure function.
//!
//! Every accepted create, update or delete is one commit on the tenant's branch
//! `refs/heads/tenants/<tenant>`: author = the requesting user, time = the entry's time, message
//! naming the operation, template and request. The tree holds one file per template,
//! `<shard>/<template>.json`, where the shard is the first byte of the id's BLAKE3 hash in hex:
//! a commit then rewrites a 256-entry root tree and one small shard tree instead of one tree
//! listing every template of the tenant (git's own object store fans out the same way).
//!
//! The handler computes the git object ids itself (they are SHA-1 over plain bytes), so
//! `versions` can name commit ids without asking the repository, and the effect runner checks
//! that libgit2 wrote exactly the predicted commit. State keys (within the templates
//! projection): `hb/<tenant>\0<shard>\0<file>` blob id, `hs/<tenant>\0<shard>` shard tree id,
//! `hh/<tenant>` the branch head.

use super::model::key;
use crate::contract::{Change, StateView};
use maestro_schemas::record::hex;
use serde::{Deserialize, Serialize};

/// The intent kind the git effect runner executes.
pub const INTENT_KIND: &str = "git_commit";

/// A git object id (SHA-1).
pub type Oid = [u8; 20];

/// One commit to write, as predicted: the runner applies `blob` at `shard/file` on top of
/// `parent` and must arrive at `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub ref_name: String,
    pub parent: Option<Oid>,
    pub id: Oid,
    pub author: String,
    pub email: String,
    /// Seconds since the Unix epoch, UTC.
    pub time: i64,
    pub message: String,
    pub shard: String,
    pub file: String,
    /// The file's new content; `None` deletes it.
    pub blob: Option<Vec<u8>>,
}

/// What a commit changes in the tenant's tree.
#[derive(Clone, Debug)]
pub struct FileChange<'a> {
    pub tenant: &'a str,
    pub template_id: &'a str,
    pub blob: Option<Vec<u8>>,
    pub user: &'a str,
    pub time_ms: u64,
    pub message: String,
}

/// Percent-escapes every byte outside `[A-Za-z0-9_-]`, so any id is a safe file, ref or email
/// part (no `/`, no `..`, no spaces). The empty string becomes `%`, which no escape produces.
pub fn escape(text: &str) -> String {
    if text.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Text for one line of a commit message: control characters and `%` percent-escaped, so a
/// producer's id can neither break the message's lines nor be mistaken for an escape.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || c == '%' {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The branch of a tenant's history.
pub fn ref_name(tenant: &str) -> String {
    format!("refs/heads/tenants/{}", escape(tenant))
}

/// The shard directory and file name of a template.
pub fn path(template_id: &str) -> (String, String) {
    let shard = format!("{:02x}", blake3::hash(template_id.as_bytes()).as_bytes()[0]);
    (shard, format!("{}.json", escape(template_id)))
}

/// A signature name libgit2 accepts unchanged: no angle brackets or control characters, no
/// surrounding spaces, never empty.
pub fn author_name(user: &str) -> String {
    let cleaned: String = user.chars().map(|c| if c == '<' || c == '>' || c.is_control() { '_' } else { c }).collect();
    let trimmed = cleaned.trim_matches(' ');
    if trimmed.is_empty() { "unknown".into() } else { trimmed.to_string() }
}

/// The id git gives an object of `kind` with `content`.
pub fn object_id(kind: &str, content: &[u8]) -> Oid {
    let mut hasher = sha1_smol::Sha1::new();
    hasher.update(format!("{kind} {}\0", content.len()).as_bytes());
    hasher.update(content);
    hasher.digest().bytes()
}

/// The id of a tree of `(name, id)` entries, all of one `mode` (names already in git order:
/// byte order, which is git's order when no name is a prefix of another directory's).
fn tree_id(mode: &str, entries: &[(String, Oid)]) -> Oid {
    let mut content = Vec::with_capacity(entries.len() * 64);
    for (name, id) in entries {
        content.extend_from_slice(mode.as_bytes());
        content.push(b' ');
        content.extend_from_slice(name.as_bytes());
        content.push(0);
        content.extend_from_slice(id);
    }
    object_id("tree", &content)
}

/// The object id named by 40 hex digits.
pub fn parse_hex(text: &str) -> Option<Oid> {
    let mut id = [0u8; 20];
    hex::decode_to_slice(text, &mut id).ok()?;
    Some(id)
}

fn commit_bytes(tree: &Oid, c: &Commit) -> Vec<u8> {
    let mut text = format!("tree {}\n", hex(tree));
    if let Some(parent) = &c.parent {
        text.push_str(&format!("parent {}\n", hex(parent)));
    }
    let person = format!("{} <{}> {} +0000", c.author, c.email, c.time);
    text.push_str(&format!("author {person}\ncommitter {person}\n\n{}", c.message));
    text.into_bytes()
}

fn oid_of(bytes: &[u8]) -> Option<Oid> {
    bytes.try_into().ok()
}

/// Entries under `prefix` as `(name, id)`, with `name`'s entry replaced by `id` (or removed).
fn entries_with(state: &dyn StateView, prefix: &[u8], name: &str, id: Option<Oid>) -> Vec<(String, Oid)> {
    let mut entries: Vec<(String, Oid)> = state
        .scan(prefix)
        .into_iter()
        .filter_map(|(k, v)| Some((String::from_utf8(k.get(prefix.len()..)?.to_vec()).ok()?, oid_of(&v)?)))
        .filter(|(n, _)| n != name)
        .collect();
    if let Some(id) = id {
        let at = entries.partition_point(|(n, _)| n.as_str() < name);
        entries.insert(at, (name.to_string(), id));
    }
    entries
}

/// Predicts the commit for `change` and the state changes that record it.
pub fn commit(state: &dyn StateView, change: FileChange<'_>) -> (Commit, Vec<Change>) {
    let tenant = change.tenant;
    let (shard, file) = path(change.template_id);
    let mut changes = Vec::with_capacity(4);
    let blob_id = change.blob.as_deref().map(|b| object_id("blob", b));
    let blob_key = key("hb", tenant, &[&shard, &file]);
    changes.push(match blob_id {
        Some(id) => Change::Put { key: blob_key, value: id.to_vec() },
        None => Change::Delete { key: blob_key },
    });
    let files = entries_with(state, &key("hb", tenant, &[&shard, ""]), &file, blob_id);
    let shard_id = (!files.is_empty()).then(|| tree_id("100644", &files));
    let shard_key = key("hs", tenant, &[&shard]);
    changes.push(match shard_id {
        Some(id) => Change::Put { key: shard_key, value: id.to_vec() },
        None => Change::Delete { key: shard_key },
    });
    let shards = entries_with(state, &key("hs", tenant, &[""]), &shard, shard_id);
    let root = tree_id("40000", &shards);
    let mut commit = Commit {
        ref_name: ref_name(tenant),
        parent: state.get(&key("hh", tenant, &[])).and_then(|v| oid_of(&v)),
        id: [0; 20],
        author: author_name(change.user),
        email: format!("{}@{}", escape(change.user), escape(tenant)),
        time: (change.time_ms / 1000) as i64,
        message: change.message,
        shard,
        file,
        blob: change.blob,
    };
    commit.id = object_id("commit", &commit_bytes(&root, &commit));
    changes.push(Change::Put { key: key("hh", tenant, &[]), value: commit.id.to_vec() });
    (commit, changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::apply_changes;
    use std::collections::BTreeMap;

    #[test]
    fn object_ids_are_gits() {
        // `printf 'hello\n' | git hash-object --stdin` and the well-known empty tree.
        assert_eq!(hex(&object_id("blob", b"hello\n")), "ce013625030ba8dba906f756967f9e9ca394464a");
        assert_eq!(hex(&tree_id("40000", &[])), "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
        assert_eq!(parse_hex(&hex(&object_id("blob", b"x"))), Some(object_id("blob", b"x")));
        assert_eq!(parse_hex("zz"), None);
    }

    #[test]
    fn names_are_escaped_and_signatures_clean() {
        assert_eq!(escape("a/b c.d"), "a%2Fb%20c%2Ed");
        assert_eq!(escape(""), "%");
        assert_eq!(one_line("v1.2.0 req\n%"), "v1.2.0 req%0A%25");
        assert_eq!(ref_name("acme"), "refs/heads/tenants/acme");
        assert_eq!(author_name(" <eve>\n "), "_eve__");
        assert_eq!(author_name("   "), "unknown");
    }

    #[test]
    fn commits_chain_and_deletes_empty_their_shard() {
        let mut state = BTreeMap::new();
        let change = |id: &'static str, blob: Option<&[u8]>, ms| FileChange {
            tenant: "acme",
            template_id: id,
            blob: blob.map(<[u8]>::to_vec),
            user: "ann",
            time_ms: ms,
            message: format!("change {id}\n"),
        };
        let (first, changes) = commit(&state, change("a", Some(b"one"), 1_000));
        apply_changes(&mut state, &changes);
        assert_eq!(first.parent, None);
        let (second, changes) = commit(&state, change("b", Some(b"two"), 2_000));
        apply_changes(&mut state, &changes);
        assert_eq!(second.parent, Some(first.id));
        let (third, changes) = commit(&state, change("b", None, 3_000));
        apply_changes(&mut state, &changes);
        assert_eq!(third.parent, Some(second.id));
        // Deleting "b" leaves the same tree as before it was created.
        let only_a = state.keys().filter(|k| k.starts_with(b"hb/")).count();
        assert_eq!(only_a, 1);
        let (again, _) = commit(&BTreeMap::new(), change("a", Some(b"one"), 1_000));
        assert_eq!(again.id, first.id, "the same change on the same state gives the same commit");
    }
}
