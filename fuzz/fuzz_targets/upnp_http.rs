#![no_main]
//! `upnp_http`: see `natt_fuzz::upnp::http_target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::upnp::http_target(data));
