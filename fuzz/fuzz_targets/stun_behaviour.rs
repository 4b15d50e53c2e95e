#![no_main]
//! `stun_behaviour`: see `natt_fuzz::stun::behaviour_target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::stun::behaviour_target(data));
