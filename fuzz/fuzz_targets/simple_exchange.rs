#![no_main]
//! `simple_exchange`: see `natt_fuzz::simple::exchange_target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::simple::exchange_target(data));
