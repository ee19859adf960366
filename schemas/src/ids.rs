//! Deterministic ids: derived from the log or from the entry, never from a clock or a random
//! source, so that a replay names everything the way the live run did.

use crate::EntryId;

/// The id of the `index`-th output produced while handling log record `seq`.
pub fn output_id(seq: u64, index: u32) -> String {
    format!("{seq}-{index}")
}

/// An id derived from a stream entry, for requests that carry none of their own.
pub fn derived_id(prefix: &str, stream: &str, entry: EntryId) -> String {
    let digest = blake3::hash(format!("{stream}\n{entry}").as_bytes());
    let hex = digest.to_hex();
    format!("{prefix}-{}", &hex.as_str()[..16])
}

/// A UUID-shaped id (version 4 and variant bits set, lowercase, hyphenated) derived from
/// `kind` and `seed`, for keys the old services filled with `uuid4()`: the old models, which
/// type them as `UUID` or `UUID4`, parse it, and a replay derives the same one. `kind` keeps
/// two ids of one seed apart.
pub fn derived_uuid(kind: &str, seed: &str) -> String {
    let digest = blake3::hash(format!("{kind}\n{seed}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_bytes()[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = crate::record::hex(&bytes);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// [`derived_uuid`] of a stream entry: template ids of creates, usage event ids.
pub fn entry_uuid(kind: &str, stream: &str, entry: EntryId) -> String {
    derived_uuid(kind, &format!("{stream}\n{entry}"))
}

/// An execution id derived from a stream entry, in the old k8s service's form: 8 lowercase hex
/// digits (it used the first 8 of a uuid4). `attempt` 0 is the entry's id; a handler that finds
/// it taken by another execution asks for attempt 1, 2, ... (32 bits collide after ~65,000
/// executions), so the choice stays a function of the log.
pub fn execution_id(stream: &str, entry: EntryId, attempt: u32) -> String {
    let text = match attempt {
        0 => format!("{stream}\n{entry}"),
        n => format!("{stream}\n{entry}\n{n}"),
    };
    blake3::hash(text.as_bytes()).to_hex().as_str()[..8].to_string()
}

/// Formats Unix milliseconds as RFC 3339 UTC (`2026-11-28T07:40:23.123Z`).
pub fn format_utc_ms(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Where an entry stands in arrival order, as a key part: its entry id (time first), then its
/// stream. Projections order waiting work by it, never by log seq, so that their state does not
/// depend on how reads were cut into batches.
pub fn arrival(stream: &str, id: EntryId) -> String {
    format!("{:020}-{:020}-{stream}", id.ms, id.seq)
}

/// The naive ISO-8601 time the old Python services wrote (`2026-11-28T07:40:23.123000`, no
/// zone, microseconds), from Unix milliseconds.
pub fn naive_iso(ms: u64) -> String {
    format!("{}000", format_utc_ms(ms).trim_end_matches('Z'))
}

/// Parses a UTC time as `maestro` prints it (`2026-11-28T07:40:23.123Z`; seconds, fraction and
/// `Z` optional, a space allowed instead of `T`) or plain Unix milliseconds, into Unix
/// milliseconds. `None` names nothing it could mean.
pub fn parse_utc_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = text.split_once(['T', ' ']).unwrap_or((text, "00:00:00"));
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut clock = clock.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (clock.next()??, clock.next().unwrap_or(Some(0))?, clock.next().unwrap_or(Some(0))?);
    let milli: i64 = format!("{fraction:0<3}").get(..3)?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Howard Hinnant's days-from-civil algorithm.
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400_000 + h * 3_600_000 + m * 60_000 + s * 1000 + milli).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = EntryId { ms: 10, seq: 1 };
        let b = EntryId { ms: 10, seq: 2 };
        assert_eq!(derived_id("req", "s", a), derived_id("req", "s", a));
        assert_ne!(derived_id("req", "s", a), derived_id("req", "s", b));
        assert_ne!(derived_id("req", "s", a), derived_id("req", "t", a));
        assert!(derived_id("req", "s", a).starts_with("req-"));
        assert_eq!(output_id(7, 2), "7-2");
        let exec = execution_id("s", a, 0);
        assert!(exec.len() == 8 && exec.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{exec}");
        assert_eq!(exec, execution_id("s", a, 0));
        assert_ne!(exec, execution_id("s", a, 1));
        assert_ne!(exec, execution_id("s", b, 0));
    }

    #[test]
    fn derived_uuids_are_stable_version_4_uuids() {
        let a = EntryId { ms: 10, seq: 1 };
        let id = entry_uuid("template", "s", a);
        assert_eq!(id, entry_uuid("template", "s", a));
        assert_ne!(id, entry_uuid("usage", "s", a));
        assert_ne!(id, entry_uuid("template", "s", EntryId { ms: 10, seq: 2 }));
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
        assert!(groups[2].starts_with('4') && "89ab".contains(&groups[3][..1]), "{id}");
        assert!(id.bytes().all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format_utc_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc_ms(1_795_851_623_123), "2026-11-28T07:40:23.123Z");
        assert_eq!(format_utc_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for ms in [0, 951_782_400_000, 1_795_851_623_123, 4_102_444_799_999] {
            assert_eq!(parse_utc_ms(&format_utc_ms(ms)), Some(ms));
        }
        assert_eq!(parse_utc_ms("2026-11-28"), parse_utc_ms("2026-11-28T00:00:00Z"));
        assert_eq!(parse_utc_ms("2026-11-28 07:40"), parse_utc_ms("2026-11-28T07:40:00.000Z"));
        assert_eq!(parse_utc_ms("1795851623123"), Some(1_795_851_623_123));
        for bad in ["", "yesterday", "2026-13-01", "2026-11-28T25:00", "2026-11"] {
            assert_eq!(parse_utc_ms(bad), None, "{bad}");
        }
    }
}
