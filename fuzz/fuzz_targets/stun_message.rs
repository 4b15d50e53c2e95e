#![no_main]
//! `stun_message`: see `natt_fuzz::stun::message_target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::stun::message_target(data));
