//! The in-process global limiter next to the `governor` crate at the same rate.
//!
//! Both allow 100,000 permits per millisecond (10⁸ per second), a rate a single
//! thread cannot reach, so every call takes the "allowed" path: this measures the cost
//! of one decision, not the limit. The sliding log holds at most one window of entries.
//!
//! Run with `cargo bench -p sms-limit --bench limiter` (or `cargo xtask bench`).

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use sms_limit::InProcessLimiter;

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

criterion_group!(benches, limiters);
criterion_main!(benches);
