#![no_main]
//! `upnp_description`: see `natt_fuzz::upnp::target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::upnp::target(data));
