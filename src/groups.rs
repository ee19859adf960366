//! Consumer-group progress as Redis reports it: has a group been delivered everything on its
//! streams, and acknowledged it all? What `demo` waits for, and what the tests wait for.

use std::collections::HashMap;

/// (last delivered id, pending count) of `group` on `stream`, or `None` without that group.
pub fn group_state(conn: &mut redis::Connection, stream: &str, group: &str) -> Option<(String, u64)> {
    let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO").arg("GROUPS").arg(stream).query(conn).ok()?;
    let state = groups
        .into_iter()
        .find(|g| matches!(g.get("name"), Some(redis::Value::BulkString(n)) if n == group.as_bytes()))?;
    let last = match state.get("last-delivered-id") {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => return None,
    };
    let pending = match state.get("pending") {
        Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
        _ => return None,
    };
    Some((last, pending))
}

fn last_generated(conn: &mut redis::Connection, stream: &str) -> Option<String> {
    let info: HashMap<String, redis::Value> = redis::cmd("XINFO").arg("STREAM").arg(stream).query(conn).ok()?;
    match info.get("last-generated-id") {
        Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// True once `group` has been delivered every entry of every stream and has nothing pending.
pub fn drained(conn: &mut redis::Connection, streams: &[String], group: &str) -> bool {
    streams.iter().all(|stream| match (group_state(conn, stream, group), last_generated(conn, stream)) {
        (Some((delivered, 0)), Some(last)) => delivered == last,
        _ => false,
    })
}
