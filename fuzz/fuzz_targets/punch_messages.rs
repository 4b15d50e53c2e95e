#![no_main]
//! `punch_messages`: see `natt_fuzz::punch::target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::punch::target(data));
