#![no_main]
//! `upnp_soap`: see `natt_fuzz::upnp::soap_target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::upnp::soap_target(data));
