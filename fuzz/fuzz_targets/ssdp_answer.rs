#![no_main]
//! `ssdp_answer`: see `natt_fuzz::upnp::ssdp_target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::upnp::ssdp_target(data));
