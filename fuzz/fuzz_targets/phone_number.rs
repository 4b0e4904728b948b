//! Coverage-guided fuzzing of `PhoneNumber::parse` (`cargo +nightly fuzz run phone_number`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sms_fuzz::phone_number(data));
