//! The one decode entry point: a stream entry's raw fields in, a typed event or a typed reject
//! out. Old producers' formats and protobuf bodies decode to the same values; both then go
//! through the same normalisation (defaults, derived ids) and validation.

mod check;
mod old;
mod protobuf;

use crate::envelope::{Limits, Reject, check_size};
use crate::event::{SCHEMA_VERSION, TypedEvent};
use crate::{EntryId, Role};

/// A decoded entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub event: TypedEvent,
    /// The request id the producer gave, if it gave one: the key that recognises a re-send.
    /// (A derived id is never a re-send key: it is unique to its entry.)
    pub producer_request_id: Option<String>,
}

/// Where an entry came from: its stream and id (ids and defaults derive from them).
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    pub stream: &'a str,
    pub entry: EntryId,
}

/// The fields of one entry, read by name. Every name, and every value but `proto`, must be
/// UTF-8: the decoder looks fields up by name, so a name that is not text is an error
/// (`not_utf8`), never an unknown or a missing field.
#[derive(Debug)]
pub struct Flat<'a> {
    fields: &'a [(Vec<u8>, Vec<u8>)],
}

impl<'a> Flat<'a> {
    fn new(fields: &'a [(Vec<u8>, Vec<u8>)]) -> Result<Flat<'a>, Reject> {
        for (name, value) in fields {
            let name = std::str::from_utf8(name).map_err(|e| {
                Reject::new(
                    "not_utf8",
                    format!(
                        "a field name is not UTF-8 at byte {} (the name's bytes: {})",
                        e.valid_up_to(),
                        crate::record::hex(name.get(..64).unwrap_or(name))
                    ),
                )
            })?;
            if name == "proto" {
                continue;
            }
            if let Err(e) = std::str::from_utf8(value) {
                return Err(Reject::new(
                    "not_utf8",
                    format!("field `{name}` is not UTF-8 at byte {}", e.valid_up_to()),
                ));
            }
        }
        Ok(Flat { fields })
    }

    /// The raw bytes of the first field called `name`.
    pub fn bytes(&self, name: &str) -> Option<&'a [u8]> {
        self.fields.iter().find(|(k, _)| k.as_slice() == name.as_bytes()).map(|(_, v)| v.as_slice())
    }

    /// The text of field `name` (UTF-8 was checked up front).
    pub fn text(&self, name: &str) -> Option<&'a str> {
        self.bytes(name).and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The text of a field that must be present.
    pub fn req(&self, name: &str) -> Result<&'a str, Reject> {
        self.text(name).ok_or_else(|| Reject::new("missing_field", format!("field `{name}` is required")))
    }
}

/// The schema version an entry declares (`schema_version` field; absent means 1, the version
/// of every old producer). A version this build does not know is rejected before anything is
/// read with the wrong rules.
fn declared_version(flat: &Flat<'_>) -> Result<u32, Reject> {
    let version = match flat.text("schema_version") {
        None => 1,
        Some(text) => text
            .parse()
            .map_err(|_| Reject::new("bad_field", format!("field `schema_version` is not a number: {text:?}")))?,
    };
    if (1..=SCHEMA_VERSION).contains(&version) {
        Ok(version)
    } else {
        Err(Reject::new(
            "unsupported_version",
            format!("schema version {version}; this build reads 1 to {SCHEMA_VERSION}"),
        ))
    }
}

/// Brings an event of an older schema version to [`SCHEMA_VERSION`]. Version 1 is the first:
/// there is nothing older to upcast yet, and a newer version than this build knows is
/// rejected rather than guessed at.
pub fn upcast(version: u32, event: crate::Event) -> Result<TypedEvent, Reject> {
    match version {
        1 => Ok(TypedEvent { schema_version: SCHEMA_VERSION, event }),
        v => Err(Reject::new(
            "unsupported_version",
            format!("schema version {v}; this build reads 1 to {SCHEMA_VERSION}"),
        )),
    }
}

/// Decodes one entry of a stream with role `role`.
pub fn decode(
    role: Role,
    origin: Origin<'_>,
    fields: &[(Vec<u8>, Vec<u8>)],
    limits: &Limits,
) -> Result<Decoded, Reject> {
    check_size(fields, limits)?;
    let flat = Flat::new(fields)?;
    let version = declared_version(&flat)?;
    let event = match flat.bytes("proto") {
        Some(bytes) => protobuf::decode(role, flat.req("type")?, bytes, limits)?,
        None => old::decode(role, &flat, limits)?,
    };
    let producer_request_id = check::producer_request_id(&event);
    let event = check::normalize(event, origin);
    check::validate(&event, limits)?;
    Ok(Decoded { event: upcast(version, event)?, producer_request_id })
}
