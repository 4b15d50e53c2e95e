#![no_main]
//! `token`: see `natt_fuzz::token::target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::token::target(data));
