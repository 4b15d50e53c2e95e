#![no_main]
//! `simple_wire`: see `natt_fuzz::simple::wire_target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::simple::wire_target(data));
