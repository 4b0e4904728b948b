//! The contracts run against the in-process limiters, on manual clocks, then the
//! global limiter under several threads.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use sms_core::testing::limiter_contract::Backend;
use sms_core::testing::{ManualClock, client_limiter_contract};
use sms_core::{ClientLimiter, RateLimiter, RecipientLimiter};
use sms_limit::{
    InProcessClientLimiter, InProcessLimiter, InProcessRecipientLimiter, InstantClock,
    ManualMonotonicClock, MonotonicClock, RecipientWindow,
};

/// In-process limiters sharing one manual clock.
struct InProcess {
    clock: ManualMonotonicClock,
}

#[async_trait]
impl Backend for InProcess {
    async fn global(&self, limit: u32, window: Duration) -> Arc<dyn RateLimiter> {
        Arc::new(InProcessLimiter::with_clock(limit, window, Arc::new(self.clock.clone())).unwrap())
    }

    async fn global_with_headroom(
        &self,
        limit: u32,
        window: Duration,
        high_priority_headroom: f64,
    ) -> Arc<dyn RateLimiter> {
        Arc::new(
            InProcessLimiter::with_clock(limit, window, Arc::new(self.clock.clone()))
                .unwrap()
                .with_high_priority_headroom(high_priority_headroom)
                .unwrap(),
        )
    }

    async fn recipients(&self, windows: Vec<RecipientWindow>) -> Arc<dyn RecipientLimiter> {
        Arc::new(
            InProcessRecipientLimiter::with_clock(windows, Arc::new(self.clock.clone())).unwrap(),
        )
    }

    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    async fn cleanup(&self) {}
}

async fn in_process(_test: &str) -> Option<InProcess> {
    Some(InProcess {
        clock: ManualMonotonicClock::new(),
    })
}

sms_core::limiter_contract_tests!(in_process);

/// A client limiter on a manual monotonic clock and a manual wall clock, moved together.
struct InProcessClients {
    clock: ManualMonotonicClock,
    wall: Arc<ManualClock>,
}

#[async_trait]
impl client_limiter_contract::Backend for InProcessClients {
    async fn limiter(&self) -> Arc<dyn ClientLimiter> {
        Arc::new(InProcessClientLimiter::with_clocks(
            Arc::new(self.clock.clone()),
            self.wall.clone(),
        ))
    }

    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.wall.advance(by);
    }

    async fn utc_now(&self) -> DateTime<Utc> {
        sms_core::Clock::now(&*self.wall)
    }

    async fn cleanup(&self) {}
}

/// The client contract's cases, under `clients::` in test names.
mod clients {
    use super::*;

    async fn in_process_clients(_test: &str) -> Option<InProcessClients> {
        Some(InProcessClients {
            clock: ManualMonotonicClock::new(),
            wall: Arc::new(ManualClock::new(
                Utc.with_ymd_and_hms(2026, 3, 14, 15, 9, 26).unwrap(),
            )),
        })
    }

    sms_core::client_limiter_contract_tests!(in_process_clients);
}

#[tokio::test]
async fn the_real_clock_limits_too() {
    // The contract uses a manual clock; this checks the default clock is wired in.
    let limiter = InProcessLimiter::new(2, Duration::from_secs(60)).unwrap();
    assert!(limiter.acquire(2).await.unwrap().is_allowed());
    assert!(!limiter.acquire(1).await.unwrap().is_allowed());
}

#[test]
fn threads_on_a_frozen_clock_take_exactly_the_limit() {
    const LIMIT: u32 = 10_000;
    let clock = ManualMonotonicClock::new();
    clock.advance(Duration::from_secs(5));
    let limiter =
        InProcessLimiter::with_clock(LIMIT, Duration::from_secs(1), Arc::new(clock)).unwrap();
    let allowed: u32 = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let limiter = &limiter;
                scope.spawn(move || {
                    // Requests of 1 to 3 permits, until a request of one is refused:
                    // then the log is full.
                    let mut allowed = 0;
                    for request in thread.. {
                        let permits = [1, 3, 2][request % 3];
                        let decision = limiter.try_acquire(permits);
                        if decision.is_allowed() {
                            allowed += permits;
                        } else if permits == 1 {
                            return allowed;
                        }
                    }
                    unreachable!("the requests never end")
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(allowed, LIMIT);
    // Threads that asked for nothing yet are refused too.
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| assert!(!limiter.try_acquire(1).is_allowed()));
        }
    });
}

/// Runs `threads` threads asking `limiter` for one permit at a time until `clock` reads
/// `until`. For each permit allowed, returns the clock's readings just before and just
/// after the request: the limiter decided at some moment in between.
fn hammer(
    limiter: &InProcessLimiter,
    clock: &dyn MonotonicClock,
    threads: usize,
    until: Duration,
) -> Vec<(Duration, Duration)> {
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut allowed = Vec::new();
                    loop {
                        let before = clock.elapsed();
                        if before >= until {
                            return allowed;
                        }
                        if limiter.try_acquire(1).is_allowed() {
                            allowed.push((before, clock.elapsed()));
                        }
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    })
}

/// The most permits certainly decided within one window: for each `s` among the
/// "after" readings, the permits whose whole interval lies in `(s - window, s]`.
fn most_in_one_window(mut allowed: Vec<(Duration, Duration)>, window: Duration) -> usize {
    allowed.sort_by_key(|&(_, after)| after);
    (0..allowed.len())
        .map(|last| {
            let end = allowed[last].1;
            let first = allowed[..last].partition_point(|&(_, after)| end - after >= window);
            allowed[first..=last]
                .iter()
                .filter(|&&(before, _)| end - before < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn threads_on_a_moving_manual_clock_never_exceed_the_limit_in_any_window() {
    const LIMIT: u32 = 200;
    let window = Duration::from_millis(10);
    let until = Duration::from_millis(300);
    let clock = ManualMonotonicClock::new();
    let limiter = InProcessLimiter::with_clock(LIMIT, window, Arc::new(clock.clone())).unwrap();
    let allowed = std::thread::scope(|scope| {
        // Time moves in 50 µs steps, so the window slides while the threads race.
        scope.spawn(|| {
            while clock.elapsed() < until {
                clock.advance(Duration::from_micros(50));
                std::thread::sleep(Duration::from_micros(20));
            }
        });
        hammer(&limiter, &clock, 4, until)
    });
    let total = allowed.len();
    let most = most_in_one_window(allowed, window);
    eprintln!("manual: {total} allowed, at most {most} in one window");
    assert!(most <= LIMIT as usize, "{most} permits in one window");
    // The limit was reached and the window slid: the check above was not idle.
    assert!(total > 10 * LIMIT as usize, "only {total} allowed");
}

#[test]
fn threads_on_the_real_clock_never_exceed_the_limit_in_any_window() {
    const LIMIT: u32 = 300;
    let window = Duration::from_millis(20);
    let clock = InstantClock::new();
    let limiter = InProcessLimiter::with_clock(LIMIT, window, Arc::new(clock)).unwrap();
    let allowed = hammer(&limiter, &clock, 4, Duration::from_millis(300));
    let total = allowed.len();
    let most = most_in_one_window(allowed, window);
    eprintln!("real: {total} allowed, at most {most} in one window");
    assert!(most <= LIMIT as usize, "{most} permits in one window");
    assert!(total > 2 * LIMIT as usize, "only {total} allowed");
}
