//! The first check every entry passes: size limits, UTF-8, and the fields its stream's old
//! producers always send. An entry that fails is recorded as rejected with a [`Reject`] that
//! names the reason; it is never dropped and never stalls the stream.

use crate::Role;
use serde::{Deserialize, Serialize};

/// Limits on one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Sum of field name and value bytes.
    pub max_entry_bytes: usize,
    /// Number of field/value pairs.
    pub max_fields: usize,
    /// Nesting depth of a JSON value inside a field.
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_entry_bytes: 1024 * 1024, max_fields: 64, max_json_depth: 64 }
    }
}

/// Why an entry was rejected: a stable machine-readable `code` and a human `detail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    pub code: String,
    pub detail: String,
}

impl Reject {
    pub fn new(code: &str, detail: impl Into<String>) -> Reject {
        Reject { code: code.to_string(), detail: detail.into() }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

/// The value of an engine-written `origin` field starts with this.
pub const ORIGIN_PREFIX: &str = "maestro-engine/";

/// Size of an entry as the limits count it.
pub fn entry_bytes(fields: &[(String, Vec<u8>)]) -> usize {
    fields.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Checks the size limits only. Done first, so that an oversized entry is never parsed.
pub fn check_size(fields: &[(String, Vec<u8>)], limits: &Limits) -> Result<(), Reject> {
    if fields.len() > limits.max_fields {
        return Err(Reject::new(
            "too_many_fields",
            format!("{} fields, the limit is {}", fields.len(), limits.max_fields),
        ));
    }
    let bytes = entry_bytes(fields);
    if bytes > limits.max_entry_bytes {
        return Err(Reject::new("too_large", format!("{bytes} bytes, the limit is {}", limits.max_entry_bytes)));
    }
    Ok(())
}

/// True when the entry carries the `origin` mark of an engine's own output.
pub fn is_own_output(fields: &[(String, Vec<u8>)]) -> bool {
    fields.iter().any(|(k, v)| k == "origin" && v.starts_with(ORIGIN_PREFIX.as_bytes()))
}

fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
}

fn require<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Result<&'a [u8], Reject> {
    field(fields, name).ok_or_else(|| Reject::new("missing_field", format!("field `{name}` is required")))
}

/// Deepest nesting of `[`/`{` in a JSON text, counted without recursion so that a hostile
/// 10,000-deep value costs one pass and no stack.
pub fn json_depth(text: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// What an entry's JSON field holds that the engine needs before any handler runs.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    request_id: Option<serde_json::Value>,
}

/// Checks that field `name` holds a JSON object within the depth limit; returns its
/// `request_id` when it has a string one.
fn check_json_object(fields: &[(String, Vec<u8>)], name: &str, limits: &Limits) -> Result<Option<String>, Reject> {
    let text = require(fields, name)?;
    let depth = json_depth(text);
    if depth > limits.max_json_depth {
        return Err(Reject::new(
            "too_deep",
            format!("field `{name}` nests {depth} deep, the limit is {}", limits.max_json_depth),
        ));
    }
    let probe: Probe =
        serde_json::from_slice(text).map_err(|e| Reject::new("bad_json", format!("field `{name}`: {e}")))?;
    Ok(match probe.request_id {
        Some(serde_json::Value::String(id)) if !id.is_empty() => Some(id),
        _ => None,
    })
}

/// What the envelope check learned about an accepted entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// The producer's own request id, used to recognise re-sends.
    pub request_id: Option<String>,
}

/// Checks an entry of a stream with role `role`: every value UTF-8, the fields its producers
/// always send present, JSON fields well formed and not too deep. Size limits are checked by
/// [`check_size`] before this.
pub fn check(role: Role, fields: &[(String, Vec<u8>)], limits: &Limits) -> Result<Checked, Reject> {
    if let Some((name, value)) = fields.iter().find(|(_, v)| std::str::from_utf8(v).is_err()) {
        let at = std::str::from_utf8(value).err().map(|e| e.valid_up_to()).unwrap_or(0);
        return Err(Reject::new("not_utf8", format!("field `{name}` is not UTF-8 at byte {at}")));
    }
    let mut checked = Checked::default();
    match role {
        Role::TemplatesRequests => {
            checked.request_id = check_json_object(fields, "data", limits)?;
        }
        Role::TemplatesResults | Role::TemplatesUsage => {
            check_json_object(fields, "data", limits)?;
        }
        Role::AutomationJobs | Role::K8sJobs => {
            require(fields, "type")?;
            checked.request_id = check_json_object(fields, "payload", limits)?;
        }
        Role::AutomationHealing => {
            checked.request_id = check_json_object(fields, "payload", limits)?;
        }
        Role::AutomationResults => {
            require(fields, "type")?;
        }
        Role::K8sResults | Role::K8sStatus => {
            require(fields, "type")?;
            require(fields, "execution_id")?;
        }
        Role::AutomationErrors => {
            for name in ["error_type", "error_message", "file_path"] {
                require(fields, name)?;
            }
        }
        Role::AutomationValidation => {}
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn old_template_request_passes_and_names_its_request_id() {
        let fields = f(&[(
            "data",
            r#"{"request_id":"r-1","operation":"retrieve","tenant_id":"t","user_id":"u","parameters":{}}"#,
        )]);
        let checked = check(Role::TemplatesRequests, &fields, &Limits::default()).unwrap();
        assert_eq!(checked.request_id.as_deref(), Some("r-1"));
    }

    #[test]
    fn rejects_name_their_reason() {
        let limits = Limits::default();
        let cases = [
            (Role::TemplatesRequests, f(&[("data", "{nope")]), "bad_json"),
            (Role::TemplatesRequests, f(&[("other", "{}")]), "missing_field"),
            (Role::K8sJobs, f(&[("payload", "{}")]), "missing_field"),
            (Role::K8sStatus, f(&[("type", "status_update")]), "missing_field"),
        ];
        for (role, fields, code) in cases {
            assert_eq!(check(role, &fields, &limits).unwrap_err().code, code);
        }
        let bad_utf8 = vec![("data".to_string(), vec![b'{', 0xff, b'}'])];
        let err = check(Role::TemplatesRequests, &bad_utf8, &limits).unwrap_err();
        assert_eq!((err.code.as_str(), err.detail.as_str()), ("not_utf8", "field `data` is not UTF-8 at byte 1"));
    }

    #[test]
    fn deep_json_is_rejected_without_recursion() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let fields = f(&[("type", "x"), ("payload", &deep)]);
        assert_eq!(check(Role::K8sJobs, &fields, &Limits::default()).unwrap_err().code, "too_deep");
        assert_eq!(json_depth(br#"{"a":"[[[[","b":[{}]}"#), 3);
    }

    #[test]
    fn size_limits_come_first() {
        let limits = Limits { max_entry_bytes: 10, max_fields: 2, max_json_depth: 64 };
        assert_eq!(check_size(&f(&[("a", "12345678901")]), &limits).unwrap_err().code, "too_large");
        assert_eq!(check_size(&f(&[("a", ""), ("b", ""), ("c", "")]), &limits).unwrap_err().code, "too_many_fields");
        assert!(check_size(&f(&[("a", "123")]), &limits).is_ok());
    }

    #[test]
    fn own_outputs_are_recognised() {
        assert!(is_own_output(&f(&[("origin", "maestro-engine/c1"), ("data", "{}")])));
        assert!(!is_own_output(&f(&[("origin", "someone-else")])));
    }
}
