//! State keys of the domain projections: `<kind>` then the parts, separated by a 0 byte, so
//! that a prefix of parts is a prefix of keys.

pub fn join(kind: &str, parts: &[&str]) -> Vec<u8> {
    let mut key = kind.as_bytes().to_vec();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}
