#![no_main]
//! `stun_exchange`: see `natt_fuzz::stun::exchange_target`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| natt_fuzz::stun::exchange_target(data));
