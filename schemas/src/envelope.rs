//! The first check every entry passes: its size limits. An entry that fails is recorded as
//! rejected with a [`Reject`] that names the reason; it is never dropped and never stalls the
//! stream. The engine's own outputs are recognised in [`crate::own`], decoding proper is in
//! [`crate::decode`].

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
    /// Length of an id (request, tenant, user, template, execution, orchestrator, repair).
    pub max_id_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_entry_bytes: 1024 * 1024, max_fields: 64, max_json_depth: 64, max_id_bytes: 256 }
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

/// The value of an engine-written `origin` field starts with this (what proves an output the
/// engine's is its mark, [`crate::own`]).
pub const ORIGIN_PREFIX: &str = "maestro-engine/";

/// Size of an entry as the limits count it.
pub fn entry_bytes(fields: &[(Vec<u8>, Vec<u8>)]) -> usize {
    fields.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Checks the size limits only. Done first, so that an oversized entry is never parsed.
pub fn check_size(fields: &[(Vec<u8>, Vec<u8>)], limits: &Limits) -> Result<(), Reject> {
    if fields.len() > limits.max_fields {
        return Err(Reject::new(
            "too_many_fields",
            format!("{} fields, the limit is {}", fields.len(), limits.max_fields),
        ));
    }
    let bytes = entry_bytes(fields);
    if bytes > limits.max_entry_bytes {
        return Err(too_large(bytes, limits));
    }
    Ok(())
}

/// The reject of an entry of `bytes` bytes, over the limit.
pub fn too_large(bytes: usize, limits: &Limits) -> Reject {
    Reject::new("too_large", format!("{bytes} bytes, the limit is {}", limits.max_entry_bytes))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn depth_is_counted_without_recursion_and_ignores_strings() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(json_depth(deep.as_bytes()), 10_000);
        assert_eq!(json_depth(br#"{"a":"[[[[","b":[{}]}"#), 3);
        assert_eq!(json_depth(br#"{"a":"\"[[","b":1}"#), 1);
    }

    #[test]
    fn size_limits_come_first() {
        let limits = Limits { max_entry_bytes: 10, max_fields: 2, ..Limits::default() };
        assert_eq!(check_size(&f(&[("a", "12345678901")]), &limits).unwrap_err().code, "too_large");
        assert_eq!(check_size(&f(&[("a", ""), ("b", ""), ("c", "")]), &limits).unwrap_err().code, "too_many_fields");
        assert!(check_size(&f(&[("a", "123")]), &limits).is_ok());
    }
}
