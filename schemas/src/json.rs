//! Reading the old producers' JSON objects field by field, with a typed reject for every way a
//! field can be wrong, and keeping the keys this version does not know.
//!
//! An object is split into its top-level keys and the raw text of each value, borrowed from the
//! entry: no value tree is built, and open-ended values (operation parameters, result objects,
//! unknown keys) are kept as the exact text the producer sent.

use crate::envelope::{Limits, Reject, json_depth};
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A JSON object being taken apart; `name` is where it came from, for messages.
#[derive(Debug)]
pub struct Obj<'a> {
    name: String,
    map: BTreeMap<Cow<'a, str>, &'a RawValue>,
    limits: Limits,
}

fn bad(name: &str, key: &str, want: &str) -> Reject {
    Reject::new("bad_field", format!("`{name}.{key}` must be {want}"))
}

/// Rejects text nested deeper than the limit, without recursion. Nesting can be no deeper than
/// the number of opening brackets, which a vectorised count finds fast; only texts with more
/// brackets than the limit get the exact, string-aware scan.
fn check_depth(name: &str, text: &[u8], limits: &Limits) -> Result<(), Reject> {
    let brackets = text.iter().filter(|&&b| b == b'[' || b == b'{').count();
    if brackets <= limits.max_json_depth {
        return Ok(());
    }
    let depth = json_depth(text);
    if depth > limits.max_json_depth {
        return Err(Reject::new(
            "too_deep",
            format!("`{name}` nests {depth} deep, the limit is {}", limits.max_json_depth),
        ));
    }
    Ok(())
}

/// Checks that `text` is one well-formed JSON value within the depth limit.
pub fn validate(name: &str, text: &[u8], limits: &Limits) -> Result<(), Reject> {
    check_depth(name, text, limits)?;
    serde_json::from_slice::<IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| Reject::new("bad_json", format!("`{name}`: {e}")))
}

impl<'a> Obj<'a> {
    /// Splits the JSON object in `text` (the entry field `name`) into its keys.
    pub fn parse(name: &str, text: &'a [u8], limits: &Limits) -> Result<Obj<'a>, Reject> {
        check_depth(name, text, limits)?;
        if text.trim_ascii_start().first() != Some(&b'{') {
            validate(name, text, limits)?;
            return Err(Reject::new("bad_field", format!("`{name}` must be a JSON object")));
        }
        let map = serde_json::from_slice(text).map_err(|e| Reject::new("bad_json", format!("`{name}`: {e}")))?;
        Ok(Obj { name: name.to_string(), map, limits: *limits })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw text of `key`, or `None` when absent or null.
    fn take(&mut self, key: &str) -> Option<&'a str> {
        self.map.remove(key).map(RawValue::get).filter(|raw| *raw != "null")
    }

    fn typed<T: serde::de::DeserializeOwned>(&mut self, key: &str, want: &str) -> Result<Option<T>, Reject> {
        match self.take(key) {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw).map(Some).map_err(|_| bad(&self.name, key, want)),
        }
    }

    /// A string, or `None` when absent or null.
    pub fn opt_str(&mut self, key: &str) -> Result<Option<String>, Reject> {
        self.typed(key, "a string")
    }

    /// A string that must be present.
    pub fn req_str(&mut self, key: &str) -> Result<String, Reject> {
        self.opt_str(key)?.ok_or_else(|| Reject::new("missing_field", format!("`{}.{key}` is required", self.name)))
    }

    pub fn opt_bool(&mut self, key: &str) -> Result<Option<bool>, Reject> {
        self.typed(key, "true or false")
    }

    pub fn opt_i64(&mut self, key: &str) -> Result<Option<i64>, Reject> {
        self.typed(key, "an integer")
    }

    pub fn opt_u32(&mut self, key: &str) -> Result<Option<u32>, Reject> {
        self.typed(key, "an integer from 0 to 4294967295")
    }

    pub fn opt_f64(&mut self, key: &str) -> Result<Option<f64>, Reject> {
        self.typed(key, "a number")
    }

    /// A JSON object as the producer wrote it, or `None` when absent or null.
    pub fn opt_object_json(&mut self, key: &str) -> Result<Option<String>, Reject> {
        match self.take(key) {
            None => Ok(None),
            Some(raw) if raw.starts_with('{') => Ok(Some(raw.to_string())),
            Some(_) => Err(bad(&self.name, key, "a JSON object")),
        }
    }

    /// A nested object, or `None` when absent or null.
    pub fn opt_obj(&mut self, key: &str) -> Result<Option<Obj<'a>>, Reject> {
        match self.take(key) {
            None => Ok(None),
            Some(raw) if raw.starts_with('{') => {
                Obj::parse(&format!("{}.{key}", self.name), raw.as_bytes(), &self.limits).map(Some)
            }
            Some(_) => Err(bad(&self.name, key, "a JSON object")),
        }
    }

    /// A list of strings (empty when absent).
    pub fn str_list(&mut self, key: &str) -> Result<Vec<String>, Reject> {
        Ok(self.typed(key, "a list of strings")?.unwrap_or_default())
    }

    /// An object of string values (empty when absent).
    pub fn str_map(&mut self, key: &str) -> Result<BTreeMap<String, String>, Reject> {
        Ok(self.typed(key, "an object of strings")?.unwrap_or_default())
    }

    /// The keys nobody took, with the JSON text the producer sent: kept, not dropped.
    pub fn rest(self) -> BTreeMap<String, String> {
        self.map.into_iter().map(|(k, v)| (k.into_owned(), v.get().to_string())).collect()
    }

    /// Adds the keys nobody took to `extra` as `<prefix>.<key>` (for objects nested in a
    /// payload, so that the payload's one `extra` map keeps them all).
    pub fn rest_into(self, prefix: &str, extra: &mut BTreeMap<String, String>) {
        for (k, v) in self.map {
            extra.insert(format!("{prefix}.{k}"), v.get().to_string());
        }
    }
}
