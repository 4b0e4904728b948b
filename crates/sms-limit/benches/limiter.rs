//! The in-process global limiter next to the `governor` crate at the same rate.
//!
//! Both allow 100,000 permits per millisecond (10⁸ per second), a rate these loops do
//! not reach, so every call takes the "allowed" path: this measures the cost of one
//! decision, not the limit. The sliding log holds at most one window of entries.
//!
//! The `_2_threads` variants run two threads against one shared limiter, each making
//! the same number of decisions, and report wall time per decision (the run's wall
//! time divided by the decisions of both threads). Twice the throughput of one thread
//! shows as half the time of the one-thread variant; a lock that serialises the two
//! shows as about the same time, or worse.
//!
//! `recipients` checks the in-process per-recipient limiter (default windows: 1 per
//! 60 s, 10 per 24 h) with a new number each time, over 400,000 numbers: the first
//! pass allows and logs each, later passes find each logged and limited.
//!
//! Run with `cargo bench -p sms-limit --bench limiter` (or `cargo xtask bench`).

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

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

    group.bench_function("in_process_2_threads", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, || {
                std::hint::black_box(ours.try_acquire(1)).is_allowed()
            })
        });
    });
    group.bench_function("governor_2_threads", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, || std::hint::black_box(governor.check()).is_ok())
        });
    });
    group.finish();
}

/// Runs `decide` `iters` times on each of two threads at once; returns the wall time
/// divided by two, so criterion's per-iteration figure is wall time per decision.
///
/// Says so on stderr if more than 1 in 1000 decisions were refusals: the figure would
/// then include the limited path, which this benchmark does not mean to measure.
/// (`governor` refuses a handful per million when two threads race on its cell.)
fn on_two_threads(iters: u64, decide: impl Fn() -> bool + Sync) -> Duration {
    let start = Instant::now();
    let refused: u64 = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| (0..iters).map(|_| u64::from(!decide())).sum::<u64>()))
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("a benchmark thread panicked"))
            .sum()
    });
    let elapsed = start.elapsed();
    if refused * 1000 > 2 * iters {
        eprintln!("note: {refused} of {} decisions were refusals", 2 * iters);
    }
    elapsed / 2
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
