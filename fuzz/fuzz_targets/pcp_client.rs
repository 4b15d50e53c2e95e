#![no_main]
//! `pcp_client`: see `natt_fuzz::pcp::client_target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::pcp::client_target(data));
