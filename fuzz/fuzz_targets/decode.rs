//! The ring-buffer record decoder: any bytes, as the kernel side (another program) might send
//! them. Never a panic; a wrong length is exactly a `Length` error; and a decoded event is
//! written by the hand-written JSON encoder byte for byte as serde writes it.
//!
//! Each input is tried twice: as it is (lengths, tags), and fitted to a record with a valid
//! tag, so that every run also reaches the field decoding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::decode::{DecodeError, decode};
use observer::timefmt::Clock;
use observer_common::{BIND_RECORD_SIZE, RECORD_BIND};

fuzz_target!(|data: &[u8]| {
    // A clock as a real host has one (realtime - monotonic), fixed so runs reproduce.
    let clock = Clock::with_offset(1_795_278_230_000_000_000);
    check(data, &clock);
    let mut record = data.to_vec();
    record.resize(BIND_RECORD_SIZE, 0);
    record[..4].copy_from_slice(&RECORD_BIND.to_ne_bytes());
    check(&record, &clock);
});

fn check(bytes: &[u8], clock: &Clock) {
    match decode(bytes, clock) {
        Err(DecodeError::Length { got, expected }) => {
            assert_eq!((got, expected), (bytes.len(), BIND_RECORD_SIZE));
            assert_ne!(got, expected);
        }
        Err(_) => assert_eq!(bytes.len(), BIND_RECORD_SIZE),
        Ok(event) => {
            assert_eq!(bytes.len(), BIND_RECORD_SIZE);
            assert!(event.errno >= 0);
            let mut fast = Vec::new();
            assert!(observer::jsonline::encode(&mut fast, &event));
            let serde = serde_json::to_string(&event).expect("serde encodes");
            assert_eq!(String::from_utf8(fast).expect("UTF-8"), serde);
        }
    }
}
