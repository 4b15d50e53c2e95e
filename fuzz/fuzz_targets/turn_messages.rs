#![no_main]
//! `turn_messages`: see `natt_fuzz::turn::target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::turn::target(data));
