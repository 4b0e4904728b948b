//! The in-process global limiter next to the `governor` crate at the same rate.
//!
//! Both allow 100,000 permits per millisecond (10⁸ per second), a rate a single
//! thread cannot reach, so every call takes the "allowed" path: this measures the cost
//! of one decision, not the limit. The sliding log holds at most one window of entries.
//!
//! `recipients` checks the in-process per-recipient limiter (default windows: 1 per
//! 60 s, 10 per 24 h) with a new number each time, over 400,000 numbers: the first
//! pass allows and logs each, later passes find each logged and limited.
//!
//! Run with `cargo bench -p sms-limit --bench limiter` (or `cargo xtask bench`).

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use sms_core::PhoneNumber;
use sms_limit::{InProcessLimiter, InProcessRecipientLimiter, LimitConfig};

const PER_WINDOW: u32 = 100_000;
const WINDOW: Duration = Duration::from_millis(1);

fn limiters(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    let ours = InProcessLimiter::new(PER_WINDOW, WINDOW).expect("a valid limiter");
    group.bench_function("in_process", |b| {
        b.iter(|| std::hint::black_box(ours.try_acquire(1)).is_allowed());
    });

    // The same rate as a GCRA: one cell per WINDOW / PER_WINDOW, a burst of PER_WINDOW.
    let burst = NonZeroU32::new(PER_WINDOW).expect("non-zero");
    let quota = Quota::with_period(WINDOW / PER_WINDOW)
        .expect("a non-zero period")
        .allow_burst(burst);
    let governor = RateLimiter::direct(quota);
    group.bench_function("governor", |b| {
        b.iter(|| std::hint::black_box(governor.check()).is_ok());
    });
    group.finish();
}

fn recipients(c: &mut Criterion) {
    const NUMBERS: u32 = 400_000;
    let numbers: Vec<PhoneNumber> = (0..NUMBERS)
        .map(|n| PhoneNumber::parse(&format!("+86138{n:08}")).expect("a valid number"))
        .collect();
    let limiter = InProcessRecipientLimiter::new(LimitConfig::default().recipient_windows)
        .expect("valid windows");
    let mut group = c.benchmark_group("recipient_limiter");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut next = numbers.iter().cycle();
    group.bench_function("in_process_distinct_numbers", |b| {
        b.iter(|| {
            let number = next.next().expect("an endless cycle");
            std::hint::black_box(limiter.check_now(std::slice::from_ref(number)))
        });
    });
    group.finish();
}

criterion_group!(benches, limiters, recipients);
criterion_main!(benches);
