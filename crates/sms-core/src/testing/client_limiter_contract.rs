//! The client limiter contract: what every [`ClientLimiter`] backend does, written
//! once (feature `testing`).
//!
//! `sms-limit` runs it against its in-process and Redis client limiters; a third-party
//! backend implements [`Backend`] and invokes
//! [`client_limiter_contract_tests!`](crate::client_limiter_contract_tests) in a test
//! module:
//!
//! ```ignore
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use async_trait::async_trait;
//! use chrono::{DateTime, Utc};
//! use sms_core::ClientLimiter;
//! use sms_core::testing::client_limiter_contract::Backend;
//!
//! struct MyBackend { /* a connection, a key prefix, ... */ }
//!
//! #[async_trait]
//! impl Backend for MyBackend {
//!     async fn limiter(&self) -> Arc<dyn ClientLimiter> {
//!         Arc::new(my_crate::ClientLimiter::new())
//!     }
//!     async fn advance(&self, by: Duration) {
//!         tokio::time::sleep(by).await; // or move clocks you control
//!     }
//!     async fn utc_now(&self) -> DateTime<Utc> {
//!         Utc::now() // the clock the limiter reads its days from
//!     }
//!     async fn cleanup(&self) {}
//! }
//!
//! /// One fresh backend per test; `None` skips the test (say why on stderr).
//! async fn my_backend(_test_name: &str) -> Option<MyBackend> {
//!     Some(MyBackend { /* ... */ })
//! }
//!
//! sms_core::client_limiter_contract_tests!(my_backend);
//! ```
//!
//! The macro expands to one `#[tokio::test]` per case, as
//! [`limiter_contract_tests!`](crate::limiter_contract_tests) does, with the same
//! needs. As there, a Redis backend moves time by sleeping, so the `per_second` cases
//! keep margins of 100 ms or more around the window's edges; the `per_day` cases need
//! no waiting, only the day the limiter reads, which [`Backend::utc_now`] tells.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveTime, Utc};

use crate::{ClientId, ClientLimiter, ClientQuota, QuotaDecision, QuotaWindow};

/// What the contract needs from a backend.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A new client limiter with nothing counted yet.
    async fn limiter(&self) -> Arc<dyn ClientLimiter>;
    /// Lets `by` pass on the limiter's clocks (its seconds and its days).
    async fn advance(&self, by: Duration);
    /// Now, on the clock the limiter reads its UTC days from.
    async fn utc_now(&self) -> DateTime<Utc>;
    /// Removes whatever the test stored.
    async fn cleanup(&self);
}

const SECOND: Duration = Duration::from_secs(1);

fn client(name: &str) -> ClientId {
    ClientId::new(name).unwrap()
}

fn per_second(limit: u32) -> ClientQuota {
    ClientQuota {
        per_second: Some(limit),
        per_day: None,
    }
}

fn per_day(limit: u32) -> ClientQuota {
    ClientQuota {
        per_second: None,
        per_day: Some(limit),
    }
}

fn both(per_second: u32, per_day: u32) -> ClientQuota {
    ClientQuota {
        per_second: Some(per_second),
        per_day: Some(per_day),
    }
}

/// How long from `now` to the next UTC midnight.
fn until_midnight(now: DateTime<Utc>) -> Duration {
    let next_day = now
        .date_naive()
        .succ_opt()
        .unwrap()
        .and_time(NaiveTime::MIN)
        .and_utc();
    (next_day - now).to_std().unwrap()
}

/// Lets the backend's day turn first when it ends within a few seconds, so that a
/// case's requests all fall on one day.
async fn away_from_midnight(backend: &dyn Backend) {
    let left = until_midnight(backend.utc_now().await);
    if left < Duration::from_secs(5) {
        backend.advance(left + Duration::from_millis(100)).await;
    }
}

async fn allowed(
    limiter: &dyn ClientLimiter,
    client: &ClientId,
    quota: ClientQuota,
    permits: u32,
) -> bool {
    limiter.acquire(client, quota, permits).await.unwrap() == QuotaDecision::Allowed
}

async fn count_allowed(
    limiter: &dyn ClientLimiter,
    client: &ClientId,
    quota: ClientQuota,
    requests: u32,
) -> u32 {
    let mut count = 0;
    for _ in 0..requests {
        if allowed(limiter, client, quota, 1).await {
            count += 1;
        }
    }
    count
}

/// Asserts a refusal by `window` of limit `limit`; returns its `retry_after`.
fn assert_limited(decision: QuotaDecision, window: QuotaWindow, limit: u32) -> Duration {
    match decision {
        QuotaDecision::Limited {
            window: full,
            limit: full_limit,
            retry_after,
        } => {
            assert_eq!((full, full_limit), (window, limit), "the full limit");
            assert!(!retry_after.is_zero(), "retry_after is zero");
            retry_after
        }
        QuotaDecision::Allowed => panic!("expected Limited by {window:?}, found Allowed"),
    }
}

/// `per_second` lets exactly its limit through, then refuses naming the second with
/// a `retry_after` within a second; a second later there is room again.
pub async fn per_second_allows_exactly_the_limit_then_names_the_second(backend: &dyn Backend) {
    let limiter = backend.limiter().await;
    let shop = client("shop");
    assert_eq!(count_allowed(&*limiter, &shop, per_second(5), 8).await, 5);
    let retry = assert_limited(
        limiter.acquire(&shop, per_second(5), 1).await.unwrap(),
        QuotaWindow::Second,
        5,
    );
    assert!(retry <= SECOND, "retry_after {retry:?} beyond the second");
    // More than the limit can never fit.
    assert_limited(
        limiter.acquire(&shop, per_second(5), 6).await.unwrap(),
        QuotaWindow::Second,
        5,
    );
    backend.advance(SECOND + Duration::from_millis(100)).await;
    assert_eq!(count_allowed(&*limiter, &shop, per_second(5), 8).await, 5);
}

/// `per_second` is a sliding window: permits leave one second after they were
/// counted, not at a whole second.
pub async fn the_second_slides(backend: &dyn Backend) {
    let limiter = backend.limiter().await;
    let shop = client("shop");
    assert!(allowed(&*limiter, &shop, per_second(3), 2).await);
    backend.advance(Duration::from_millis(500)).await;
    assert!(allowed(&*limiter, &shop, per_second(3), 1).await);
    assert_limited(
        limiter.acquire(&shop, per_second(3), 1).await.unwrap(),
        QuotaWindow::Second,
        3,
    );
    // The first two have left the window; the third (counted at 500 ms) has not.
    backend.advance(Duration::from_millis(600)).await;
    assert!(allowed(&*limiter, &shop, per_second(3), 2).await);
    assert_limited(
        limiter.acquire(&shop, per_second(3), 1).await.unwrap(),
        QuotaWindow::Second,
        3,
    );
}

/// `per_day` lets its limit through, then refuses naming the day, with a
/// `retry_after` that runs to the next UTC midnight.
pub async fn per_day_refuses_until_the_next_utc_midnight(backend: &dyn Backend) {
    away_from_midnight(backend).await;
    let limiter = backend.limiter().await;
    let shop = client("shop");
    assert!(allowed(&*limiter, &shop, per_day(3), 2).await);
    assert!(allowed(&*limiter, &shop, per_day(3), 1).await);
    let before = until_midnight(backend.utc_now().await);
    let retry = assert_limited(
        limiter.acquire(&shop, per_day(3), 1).await.unwrap(),
        QuotaWindow::Day,
        3,
    );
    let after = until_midnight(backend.utc_now().await);
    assert!(
        after <= retry && retry <= before,
        "retry_after {retry:?} should be the time to midnight, between {after:?} and {before:?}"
    );
    assert!(!allowed(&*limiter, &shop, per_day(3), 1).await);
}

/// A request is counted in every limit of its quota or in none: one refused by
/// `per_second` uses nothing of `per_day`, and one refused by `per_day` nothing of
/// `per_second`. (A quota is passed with each call, so a case can look at one limit
/// alone.)
pub async fn a_refusal_by_one_limit_counts_nothing_in_the_other(backend: &dyn Backend) {
    away_from_midnight(backend).await;
    let limiter = backend.limiter().await;
    let shop = client("shop");
    assert!(allowed(&*limiter, &shop, both(2, 3), 2).await);
    assert_limited(
        limiter.acquire(&shop, both(2, 3), 1).await.unwrap(),
        QuotaWindow::Second,
        2,
    );
    // The refused permit left the day at 2 of 3.
    assert!(allowed(&*limiter, &shop, per_day(3), 1).await);
    assert!(!allowed(&*limiter, &shop, per_day(3), 1).await);

    let bank = client("bank");
    assert!(allowed(&*limiter, &bank, both(4, 2), 2).await);
    assert_limited(
        limiter.acquire(&bank, both(4, 2), 1).await.unwrap(),
        QuotaWindow::Day,
        2,
    );
    // The refused permit left the second at 2 of 4.
    assert!(allowed(&*limiter, &bank, per_second(4), 2).await);
    assert!(!allowed(&*limiter, &bank, per_second(4), 1).await);
}

/// Each client has its own counts.
pub async fn clients_are_limited_independently(backend: &dyn Backend) {
    away_from_midnight(backend).await;
    let limiter = backend.limiter().await;
    let (shop, bank) = (client("shop"), client("bank"));
    assert!(allowed(&*limiter, &shop, both(2, 2), 2).await);
    assert!(!allowed(&*limiter, &shop, both(2, 2), 1).await);
    assert!(allowed(&*limiter, &bank, both(2, 2), 2).await);
    assert!(!allowed(&*limiter, &bank, both(2, 2), 1).await);
    assert!(!allowed(&*limiter, &shop, per_day(2), 1).await);
}

/// Permits given back no longer count, in every limit of the quota; only as many
/// as given back.
pub async fn given_back_permits_no_longer_count(backend: &dyn Backend) {
    away_from_midnight(backend).await;
    let limiter = backend.limiter().await;
    let shop = client("shop");
    assert!(allowed(&*limiter, &shop, both(3, 3), 3).await);
    assert!(!allowed(&*limiter, &shop, both(3, 3), 1).await);
    limiter.give_back(&shop, both(3, 3), 3).await.unwrap();
    assert!(allowed(&*limiter, &shop, both(3, 3), 3).await);
    assert!(!allowed(&*limiter, &shop, both(3, 3), 1).await);
    limiter.give_back(&shop, both(3, 3), 1).await.unwrap();
    assert!(allowed(&*limiter, &shop, both(3, 3), 1).await);
    assert!(!allowed(&*limiter, &shop, both(3, 3), 1).await);
    // Both limits got the permits back: each alone is full again.
    assert!(!allowed(&*limiter, &shop, per_second(3), 1).await);
    assert!(!allowed(&*limiter, &shop, per_day(3), 1).await);
}

/// Giving back more than is counted earns no credit for later.
pub async fn giving_back_what_was_not_counted_earns_no_credit(backend: &dyn Backend) {
    away_from_midnight(backend).await;
    let limiter = backend.limiter().await;
    let shop = client("shop");
    limiter.give_back(&shop, both(2, 2), 5).await.unwrap();
    assert!(allowed(&*limiter, &shop, both(2, 2), 2).await);
    assert!(!allowed(&*limiter, &shop, both(2, 2), 1).await);
    limiter.give_back(&shop, both(2, 2), 5).await.unwrap();
    assert!(allowed(&*limiter, &shop, both(2, 2), 2).await);
    assert!(!allowed(&*limiter, &shop, both(2, 2), 1).await);
}

/// A quota without limits allows everything and counts nothing; no permits at all
/// are always allowed.
pub async fn an_unlimited_quota_allows_everything_and_counts_nothing(backend: &dyn Backend) {
    away_from_midnight(backend).await;
    let limiter = backend.limiter().await;
    let shop = client("shop");
    for _ in 0..3 {
        assert!(allowed(&*limiter, &shop, ClientQuota::default(), 1_000_000).await);
    }
    assert!(allowed(&*limiter, &shop, both(5, 5), 5).await);
    assert!(allowed(&*limiter, &shop, both(5, 5), 0).await);
    assert!(!allowed(&*limiter, &shop, both(5, 5), 1).await);
}

/// Concurrent requests for one client get exactly its limit: 8 tasks of 50 requests
/// against a limit of 100, for `per_day` and then for `per_second`.
pub async fn concurrent_requests_get_exactly_the_limit(backend: &dyn Backend) {
    const TASKS: usize = 8;
    const REQUESTS: usize = 50;
    const LIMIT: u32 = 100;
    away_from_midnight(backend).await;
    let limiter = backend.limiter().await;
    for quota in [per_day(LIMIT), per_second(LIMIT)] {
        let shop = client(if quota.per_day.is_some() {
            "daily"
        } else {
            "busy"
        });
        let started = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..TASKS {
            let (limiter, shop) = (Arc::clone(&limiter), shop.clone());
            tasks.spawn(async move {
                let mut allowed = 0;
                for _ in 0..REQUESTS {
                    if limiter.acquire(&shop, quota, 1).await.unwrap() == QuotaDecision::Allowed {
                        allowed += 1;
                    }
                }
                allowed
            });
        }
        let mut allowed = 0;
        while let Some(result) = tasks.join_next().await {
            allowed += result.unwrap();
        }
        let elapsed = started.elapsed();
        if quota.per_second.is_some() && elapsed >= SECOND - Duration::from_millis(100) {
            // The window slid while the tasks ran: the first permits had left it.
            eprintln!("{TASKS} × {REQUESTS} requests took {elapsed:?}: not checked exactly");
            assert!(allowed >= LIMIT, "{allowed} of {LIMIT} allowed");
        } else {
            assert_eq!(allowed, LIMIT, "{quota:?} in {elapsed:?}");
        }
    }
}

/// Generates one `#[tokio::test]` per case of the client limiter contract
/// ([`testing::client_limiter_contract`](crate::testing::client_limiter_contract)),
/// each on a fresh backend.
///
/// `$make` is called with the test's name and returns a future of
/// `Option<impl Backend>`; `None` skips the test. The test runs the case, then
/// [`Backend::cleanup`](crate::testing::client_limiter_contract::Backend::cleanup).
#[macro_export]
macro_rules! client_limiter_contract_tests {
    ($make:expr) => {
        $crate::client_limiter_contract_tests!(@tests $make;
            per_second_allows_exactly_the_limit_then_names_the_second,
            the_second_slides,
            per_day_refuses_until_the_next_utc_midnight,
            a_refusal_by_one_limit_counts_nothing_in_the_other,
            clients_are_limited_independently,
            given_back_permits_no_longer_count,
            giving_back_what_was_not_counted_earns_no_credit,
            an_unlimited_quota_allows_everything_and_counts_nothing,
            concurrent_requests_get_exactly_the_limit,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(backend) = $make(stringify!($name)).await else {
                    return;
                };
                $crate::testing::client_limiter_contract::$name(&backend).await;
                $crate::testing::client_limiter_contract::Backend::cleanup(&backend).await;
            }
        )+
    };
}
