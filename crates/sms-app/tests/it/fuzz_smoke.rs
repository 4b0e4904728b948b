//! The cargo-fuzz targets' bodies run on stable over seeded random and mutated inputs: a
//! bounded smoke run, not coverage-guided fuzzing (that needs `cargo +nightly fuzz run`).
//! `SMS_FUZZ_CASES` sets the number of inputs per target (`cargo xtask chaos` raises it),
//! `SMS_FUZZ_SEED` the seed, so a failure can be replayed.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::fuzz_targets::{Inputs, phone_number, request_decoder};

fn cases() -> usize {
    std::env::var("SMS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn seed() -> u64 {
    std::env::var("SMS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_2026)
}

/// Runs `target` on `input`; a panic is reported with the input and how to replay it.
fn check(name: &str, case: usize, input: &[u8], target: fn(&[u8])) {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
        let shown: String = String::from_utf8_lossy(input).chars().take(300).collect();
        panic!(
            "{name} failed on case {case} (SMS_FUZZ_SEED={}): {shown:?}",
            seed()
        );
    }
}

#[test]
fn phone_number_target_holds_on_seeded_inputs() {
    let mut inputs = Inputs::new(seed());
    for case in 0..cases() {
        let phone = inputs.phone();
        check("phone_number", case, phone.as_bytes(), phone_number);
        let mutated = inputs.mutated();
        check("phone_number", case, &mutated, phone_number);
    }
}

#[test]
fn request_decoder_target_holds_on_seeded_inputs() {
    let mut inputs = Inputs::new(seed());
    let mut decoded = 0;
    for case in 0..cases() {
        let body = inputs.request();
        check("request_decoder", case, &body, request_decoder);
        let mutated = inputs.mutated();
        check("request_decoder", case, &mutated, request_decoder);
        decoded += usize::from(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
    }
    // The generator must mostly produce JSON, or the run tests only the JSON parser.
    assert!(
        decoded * 2 > cases(),
        "{decoded} of {} bodies were JSON",
        cases()
    );
}
