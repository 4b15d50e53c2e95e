#![no_main]
//! `pcp_wire`: see `natt_fuzz::pcp::target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::pcp::target(data));
