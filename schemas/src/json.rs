//! Reading the old producers' JSON objects field by field, with a typed reject for every way a
//! field can be wrong, and keeping the keys this version does not know.

use crate::envelope::{Limits, Reject, json_depth};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A JSON object being taken apart; `name` is the entry field it came from, for messages.
#[derive(Debug)]
pub struct Obj {
    name: String,
    map: Map<String, Value>,
    max_id_bytes: usize,
}

fn bad(name: &str, key: &str, want: &str) -> Reject {
    Reject::new("bad_field", format!("`{name}.{key}` must be {want}"))
}

/// Parses JSON text with the depth limit checked first, without recursion.
pub fn parse(name: &str, text: &[u8], limits: &Limits) -> Result<Value, Reject> {
    let depth = json_depth(text);
    if depth > limits.max_json_depth {
        return Err(Reject::new(
            "too_deep",
            format!("`{name}` nests {depth} deep, the limit is {}", limits.max_json_depth),
        ));
    }
    serde_json::from_slice(text).map_err(|e| Reject::new("bad_json", format!("`{name}`: {e}")))
}

/// Compact JSON text of a value (keys in their original order).
pub fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl Obj {
    /// Parses field `name` as a JSON object.
    pub fn parse(name: &str, text: &[u8], limits: &Limits) -> Result<Obj, Reject> {
        match parse(name, text, limits)? {
            Value::Object(map) => Ok(Obj { name: name.to_string(), map, max_id_bytes: limits.max_id_bytes }),
            _ => Err(Reject::new("bad_field", format!("`{name}` must be a JSON object"))),
        }
    }

    /// An object found inside another one.
    fn nested(&self, key: &str, map: Map<String, Value>) -> Obj {
        Obj { name: format!("{}.{key}", self.name), map, max_id_bytes: self.max_id_bytes }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A string, or `None` when absent or null.
    pub fn opt_str(&mut self, key: &str) -> Result<Option<String>, Reject> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(&self.name, key, "a string")),
        }
    }

    /// A string that must be present.
    pub fn req_str(&mut self, key: &str) -> Result<String, Reject> {
        self.opt_str(key)?.ok_or_else(|| Reject::new("missing_field", format!("`{}.{key}` is required", self.name)))
    }

    /// An id: a non-empty string no longer than the id limit, or `None`.
    pub fn opt_id(&mut self, key: &str) -> Result<Option<String>, Reject> {
        match self.opt_str(key)? {
            Some(id) if id.len() > self.max_id_bytes => Err(Reject::new(
                "too_long",
                format!("`{}.{key}` is {} bytes, the limit is {}", self.name, id.len(), self.max_id_bytes),
            )),
            Some(id) if id.is_empty() => Ok(None),
            other => Ok(other),
        }
    }

    /// An id that must be present.
    pub fn req_id(&mut self, key: &str) -> Result<String, Reject> {
        self.opt_id(key)?.ok_or_else(|| Reject::new("missing_field", format!("`{}.{key}` is required", self.name)))
    }

    pub fn opt_bool(&mut self, key: &str) -> Result<Option<bool>, Reject> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(bad(&self.name, key, "true or false")),
        }
    }

    pub fn opt_i64(&mut self, key: &str) -> Result<Option<i64>, Reject> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| bad(&self.name, key, "an integer")),
            Some(_) => Err(bad(&self.name, key, "an integer")),
        }
    }

    pub fn opt_u32(&mut self, key: &str) -> Result<Option<u32>, Reject> {
        match self.opt_i64(key)? {
            None => Ok(None),
            Some(n) => u32::try_from(n).map(Some).map_err(|_| bad(&self.name, key, "an integer from 0 to 4294967295")),
        }
    }

    pub fn opt_f64(&mut self, key: &str) -> Result<Option<f64>, Reject> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_f64().map(Some).ok_or_else(|| bad(&self.name, key, "a number")),
            Some(_) => Err(bad(&self.name, key, "a number")),
        }
    }

    /// Any JSON value as compact text, or `None` when absent or null.
    pub fn opt_json(&mut self, key: &str) -> Option<String> {
        match self.map.remove(key) {
            None | Some(Value::Null) => None,
            Some(value) => Some(compact(&value)),
        }
    }

    /// A JSON object as compact text, or `None` when absent or null.
    pub fn opt_object_json(&mut self, key: &str) -> Result<Option<String>, Reject> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value @ Value::Object(_)) => Ok(Some(compact(&value))),
            Some(_) => Err(bad(&self.name, key, "a JSON object")),
        }
    }

    /// A nested object, or `None` when absent or null.
    pub fn opt_obj(&mut self, key: &str) -> Result<Option<Obj>, Reject> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Ok(Some(self.nested(key, map))),
            Some(_) => Err(bad(&self.name, key, "a JSON object")),
        }
    }

    /// A list of strings (empty when absent).
    pub fn str_list(&mut self, key: &str) -> Result<Vec<String>, Reject> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    _ => Err(bad(&self.name, key, "a list of strings")),
                })
                .collect(),
            Some(_) => Err(bad(&self.name, key, "a list of strings")),
        }
    }

    /// An object of string values (empty when absent).
    pub fn str_map(&mut self, key: &str) -> Result<BTreeMap<String, String>, Reject> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    _ => Err(bad(&self.name, key, "an object of strings")),
                })
                .collect(),
            Some(_) => Err(bad(&self.name, key, "an object of strings")),
        }
    }

    /// The keys nobody took, as compact JSON text: forward-compatible data, kept.
    pub fn rest(self) -> BTreeMap<String, String> {
        self.map.into_iter().map(|(k, v)| (k, compact(&v))).collect()
    }

    /// Adds the keys nobody took to `extra` as `<prefix>.<key>` (for objects nested in a
    /// payload, so that the payload's one `extra` map keeps them all).
    pub fn rest_into(self, prefix: &str, extra: &mut BTreeMap<String, String>) {
        for (k, v) in self.map {
            extra.insert(format!("{prefix}.{k}"), compact(&v));
        }
    }
}
