//! Coverage-guided fuzzing of the request decoder (`cargo +nightly fuzz run request_decoder`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sms_fuzz::request_decoder(data));
