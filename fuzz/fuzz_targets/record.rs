//! Fuzzes the log record decoder with arbitrary stored bytes, with and without a valid checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maestro_schemas::Record;

fuzz_target!(|data: &[u8]| {
    let _ = Record::decode(1, data);
    // Give the body decoder a chance past the checksum too.
    let mut stored = crc32fast_hash(data).to_le_bytes().to_vec();
    stored.extend_from_slice(data);
    let _ = Record::decode(1, &stored);
});

/// CRC-32 (IEEE), as the record format uses; written out to keep this crate's dependencies
/// to the fuzzer and the code under test.
fn crc32fast_hash(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
