#![no_main]
//! `relay_records`: see `natt_fuzz::records::target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::records::target(data));
