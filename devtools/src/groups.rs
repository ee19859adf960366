//! Consumer-group progress as Redis reports it: has a group been delivered everything on its
//! streams, and acknowledged it all? What `demo` waits for, and what the tests wait for, over a
//! connection to one server or to a cluster.

use std::collections::HashMap;

/// `XINFO GROUPS` of `stream`, the entry of `group`, or `None` without that group.
fn group_info(
    conn: &mut impl redis::ConnectionLike,
    stream: &str,
    group: &str,
) -> Option<HashMap<String, redis::Value>> {
    let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO").arg("GROUPS").arg(stream).query(conn).ok()?;
    groups.into_iter().find(|g| matches!(g.get("name"), Some(redis::Value::BulkString(n)) if n == group.as_bytes()))
}

/// (last delivered id, pending count) of `group` on `stream`, or `None` without that group.
pub fn group_state(conn: &mut impl redis::ConnectionLike, stream: &str, group: &str) -> Option<(String, u64)> {
    state_of(&group_info(conn, stream, group)?)
}

fn state_of(state: &HashMap<String, redis::Value>) -> Option<(String, u64)> {
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

/// The stream's last generated id. `XINFO STREAM` also answers the first and last entries
/// whole, so it is asked only when the group cannot tell its lag.
fn last_generated(conn: &mut impl redis::ConnectionLike, stream: &str) -> Option<String> {
    let info: HashMap<String, redis::Value> = redis::cmd("XINFO").arg("STREAM").arg(stream).query(conn).ok()?;
    match info.get("last-generated-id") {
        Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// True once `group` has been delivered every entry of every stream and has nothing pending.
pub fn drained(conn: &mut impl redis::ConnectionLike, streams: &[String], group: &str) -> bool {
    streams.iter().all(|stream| {
        let Some(info) = group_info(conn, stream, group) else { return false };
        match (state_of(&info), info.get("lag")) {
            (Some((_, 0)), Some(redis::Value::Int(lag))) => *lag == 0,
            (Some((delivered, 0)), _) => last_generated(conn, stream).is_some_and(|last| delivered == last),
            _ => false,
        }
    })
}
