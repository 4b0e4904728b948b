//! The limiter contract: what every [`RateLimiter`] and [`RecipientLimiter`] backend
//! does, written once (feature `testing`); the global limiter's two lanes included.
//! Client limiters have their own suite,
//! [`client_limiter_contract`](crate::testing::client_limiter_contract).
//!
//! `sms-limit` runs it against its in-process and Redis limiters; a third-party
//! backend runs the same cases by implementing [`Backend`] and invoking
//! [`limiter_contract_tests!`](crate::limiter_contract_tests) in a test module:
//!
//! ```ignore
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use async_trait::async_trait;
//! use sms_core::testing::limiter_contract::Backend;
//! use sms_core::{RateLimiter, RecipientLimiter, RecipientWindow};
//!
//! struct MyBackend { /* a connection, a key prefix, ... */ }
//!
//! #[async_trait]
//! impl Backend for MyBackend {
//!     async fn global(&self, limit: u32, window: Duration) -> Arc<dyn RateLimiter> {
//!         self.global_with_headroom(limit, window, 0.0).await
//!     }
//!     async fn global_with_headroom(
//!         &self,
//!         limit: u32,
//!         window: Duration,
//!         high_priority_headroom: f64,
//!     ) -> Arc<dyn RateLimiter> {
//!         Arc::new(my_crate::GlobalLimiter::new(limit, window, high_priority_headroom))
//!     }
//!     async fn recipients(&self, windows: Vec<RecipientWindow>) -> Arc<dyn RecipientLimiter> {
//!         Arc::new(my_crate::RecipientLimiter::new(windows))
//!     }
//!     async fn advance(&self, by: Duration) {
//!         tokio::time::sleep(by).await; // or move a clock you control
//!     }
//!     async fn cleanup(&self) {}
//! }
//!
//! /// One fresh backend per test; `None` skips the test (say why on stderr).
//! async fn my_backend(_test_name: &str) -> Option<MyBackend> {
//!     Some(MyBackend { /* ... */ })
//! }
//!
//! sms_core::limiter_contract_tests!(my_backend);
//! ```
//!
//! The macro expands to one `#[tokio::test]` per case, named after it, on a
//! multi-threaded runtime: the test crate needs `sms-core` with the `testing` feature,
//! `async-trait`, and `tokio` with the `macros` and `rt-multi-thread` features.
//!
//! A backend hands out limiters that share state (for Redis: one key prefix) and
//! moves time forward: an in-process backend moves a manual clock, a Redis one
//! has to sleep, because its scripts read the Redis server's clock. Windows that
//! must slide are therefore short (a few seconds at most) and every assertion is about
//! counts, with margins of at least 100 ms on each side of a window edge, and of a
//! second where a step waits on the backend between two checks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    PhoneNumber, Priority, RateDecision, RateLimiter, RecipientDecision, RecipientLimiter,
    RecipientWindow,
};

/// What the contract needs from a backend.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A new global limiter of `limit` permits per `window`, with nothing counted yet,
    /// keeping no headroom for the high lane (both lanes share the whole window).
    async fn global(&self, limit: u32, window: Duration) -> Arc<dyn RateLimiter>;
    /// As [`Backend::global`], keeping `high_priority_headroom` (a share of `limit`,
    /// from 0.0 up to 1.0) for high-priority requests: normal ones stop at `limit`
    /// less that share. The cases pick shares whose product with `limit` is a whole
    /// number, so how a backend rounds does not matter.
    async fn global_with_headroom(
        &self,
        limit: u32,
        window: Duration,
        high_priority_headroom: f64,
    ) -> Arc<dyn RateLimiter>;
    /// A new recipient limiter enforcing `windows`, with nothing counted yet.
    async fn recipients(&self, windows: Vec<RecipientWindow>) -> Arc<dyn RecipientLimiter>;
    /// Lets `by` pass on the limiters' clock.
    async fn advance(&self, by: Duration);
    /// Removes whatever the test stored.
    async fn cleanup(&self);
}

const MINUTE: Duration = Duration::from_secs(60);

fn phone(n: u32) -> PhoneNumber {
    PhoneNumber::parse(&format!("+86139{n:08}")).unwrap()
}

async fn count_allowed(limiter: &dyn RateLimiter, requests: u32, permits: u32) -> u32 {
    let mut allowed = 0;
    for _ in 0..requests {
        if limiter.acquire(permits).await.unwrap().is_allowed() {
            allowed += 1;
        }
    }
    allowed
}

async fn count_allowed_in(
    limiter: &dyn RateLimiter,
    priority: Priority,
    requests: u32,
    permits: u32,
) -> u32 {
    let mut allowed = 0;
    for _ in 0..requests {
        if limiter
            .acquire_lane(permits, priority)
            .await
            .unwrap()
            .is_allowed()
        {
            allowed += 1;
        }
    }
    allowed
}

fn assert_limited_within(decision: RateDecision, window: Duration) {
    match decision {
        RateDecision::Limited { retry_after } => assert!(
            !retry_after.is_zero() && retry_after <= window,
            "retry_after {retry_after:?} should be within the window {window:?}"
        ),
        RateDecision::Allowed => panic!("expected Limited, found Allowed"),
    }
}

/// The global limit lets exactly `limit` single permits through, then refuses with a
/// `retry_after` within the window.
pub async fn allows_exactly_the_limit_then_limits(backend: &dyn Backend) {
    let limiter = backend.global(5, MINUTE).await;
    assert_eq!(count_allowed(&*limiter, 5, 1).await, 5);
    assert_limited_within(limiter.acquire(1).await.unwrap(), MINUTE);
    assert_eq!(count_allowed(&*limiter, 10, 1).await, 0);
}

/// Thousands of requests at one instant: each permit counts on its own, so exactly the
/// limit goes through. (A log keyed by the millisecond would merge the permits taken
/// in one millisecond into one entry and let far more through.)
pub async fn a_concurrent_burst_gets_exactly_the_limit(backend: &dyn Backend) {
    const LIMIT: u32 = 3000;
    const REQUESTS: u32 = 3600;
    let limiter = backend.global(LIMIT, MINUTE).await;
    let start = Arc::new(tokio::sync::Barrier::new(REQUESTS as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..REQUESTS {
        let limiter = Arc::clone(&limiter);
        let start = Arc::clone(&start);
        tasks.spawn(async move {
            // Release every request at once, so thousands land in the same millisecond.
            start.wait().await;
            limiter.acquire(1).await.unwrap().is_allowed()
        });
    }
    let mut allowed = 0;
    while let Some(result) = tasks.join_next().await {
        if result.unwrap() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, LIMIT);
}

/// A request for several permits (one per recipient) takes all of them or none.
pub async fn several_permits_are_taken_all_or_nothing(backend: &dyn Backend) {
    let limiter = backend.global(10, MINUTE).await;
    assert!(limiter.acquire(4).await.unwrap().is_allowed());
    assert!(limiter.acquire(4).await.unwrap().is_allowed());
    // Only 2 left: a request for 4 takes none of them.
    assert_limited_within(limiter.acquire(4).await.unwrap(), MINUTE);
    assert!(limiter.acquire(2).await.unwrap().is_allowed());
    assert_limited_within(limiter.acquire(1).await.unwrap(), MINUTE);
    // More than the limit can never fit.
    assert!(!limiter.acquire(11).await.unwrap().is_allowed());
}

/// Permits leave the global window one window after they were taken, not at a
/// fixed boundary.
pub async fn the_window_slides(backend: &dyn Backend) {
    // Each step has a second's margin, so a backend on a real clock (Redis) passes on a
    // loaded machine too: the checks after the first pause hold while less than a
    // whole window has passed since the first permits.
    let window = Duration::from_millis(2000);
    let limiter = backend.global(3, window).await;
    assert!(limiter.acquire(2).await.unwrap().is_allowed());
    backend.advance(Duration::from_millis(1000)).await;
    assert!(limiter.acquire(1).await.unwrap().is_allowed());
    assert_limited_within(limiter.acquire(1).await.unwrap(), window);
    // The first two permits have left the window; the third (taken at 1 s) has not.
    backend.advance(Duration::from_millis(1100)).await;
    assert_eq!(count_allowed(&*limiter, 1, 2).await, 1);
    assert_limited_within(limiter.acquire(1).await.unwrap(), window);
}

/// Normal requests stop at the ceiling (the limit less the high lane's headroom)
/// while high-priority ones still get permits, up to the whole window; `acquire` is
/// the high lane.
pub async fn the_normal_lane_leaves_the_high_lane_its_headroom(backend: &dyn Backend) {
    // 20 per window, a quarter of it (5 permits) kept for the high lane.
    let limiter = backend.global_with_headroom(20, MINUTE, 0.25).await;
    assert_eq!(
        count_allowed_in(&*limiter, Priority::Normal, 20, 1).await,
        15
    );
    assert_limited_within(
        limiter.acquire_lane(1, Priority::Normal).await.unwrap(),
        MINUTE,
    );
    assert_eq!(count_allowed_in(&*limiter, Priority::High, 3, 1).await, 3);
    assert!(limiter.acquire(2).await.unwrap().is_allowed());
    assert_limited_within(
        limiter.acquire_lane(1, Priority::High).await.unwrap(),
        MINUTE,
    );
    assert_limited_within(limiter.acquire(1).await.unwrap(), MINUTE);
    assert_limited_within(
        limiter.acquire_lane(1, Priority::Normal).await.unwrap(),
        MINUTE,
    );
}

/// High-priority permits count against the normal ceiling too: after a high burst,
/// normal requests get only what is left under the ceiling.
pub async fn high_priority_permits_count_against_the_normal_ceiling(backend: &dyn Backend) {
    let limiter = backend.global_with_headroom(20, MINUTE, 0.25).await;
    assert!(
        limiter
            .acquire_lane(12, Priority::High)
            .await
            .unwrap()
            .is_allowed()
    );
    // 12 + 4 would pass the ceiling of 15.
    assert_limited_within(
        limiter.acquire_lane(4, Priority::Normal).await.unwrap(),
        MINUTE,
    );
    assert!(
        limiter
            .acquire_lane(3, Priority::Normal)
            .await
            .unwrap()
            .is_allowed()
    );
    assert!(
        limiter
            .acquire_lane(5, Priority::High)
            .await
            .unwrap()
            .is_allowed()
    );
    assert!(!limiter.acquire(1).await.unwrap().is_allowed());
}

/// A normal request larger than the ceiling goes alone in an empty window, leaving
/// the rest to the high lane; in a window that holds anything it waits.
pub async fn a_normal_request_above_the_ceiling_goes_alone_in_an_empty_window(
    backend: &dyn Backend,
) {
    let limiter = backend.global_with_headroom(20, MINUTE, 0.25).await;
    assert!(
        limiter
            .acquire_lane(18, Priority::Normal)
            .await
            .unwrap()
            .is_allowed()
    );
    assert_limited_within(
        limiter.acquire_lane(1, Priority::Normal).await.unwrap(),
        MINUTE,
    );
    assert!(
        limiter
            .acquire_lane(2, Priority::High)
            .await
            .unwrap()
            .is_allowed()
    );
    assert_limited_within(
        limiter.acquire_lane(1, Priority::High).await.unwrap(),
        MINUTE,
    );

    let limiter = backend.global_with_headroom(20, MINUTE, 0.25).await;
    assert!(limiter.acquire(1).await.unwrap().is_allowed());
    assert_limited_within(
        limiter.acquire_lane(16, Priority::Normal).await.unwrap(),
        MINUTE,
    );
    assert!(
        limiter
            .acquire_lane(14, Priority::Normal)
            .await
            .unwrap()
            .is_allowed()
    );
    // More than the whole window never fits, in either lane.
    assert!(
        !limiter
            .acquire_lane(21, Priority::Normal)
            .await
            .unwrap()
            .is_allowed()
    );
}

/// Without headroom both lanes share the whole window.
pub async fn without_headroom_the_normal_lane_gets_the_whole_window(backend: &dyn Backend) {
    let limiter = backend.global_with_headroom(10, MINUTE, 0.0).await;
    assert_eq!(
        count_allowed_in(&*limiter, Priority::Normal, 12, 1).await,
        10
    );
    assert_limited_within(limiter.acquire(1).await.unwrap(), MINUTE);
}

/// A recipient gets one message per window, then is limited naming that window;
/// other recipients are not affected.
pub async fn one_message_per_window_then_limited_others_unaffected(backend: &dyn Backend) {
    let limiter = backend
        .recipients(vec![RecipientWindow::new(1, MINUTE)])
        .await;
    assert_eq!(
        limiter.check(&[phone(1)]).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    match limiter.check(&[phone(1)]).await.unwrap()[..] {
        [
            RecipientDecision::Limited {
                window,
                limit,
                retry_after,
            },
        ] => {
            assert_eq!((window, limit), (MINUTE, 1));
            assert!(!retry_after.is_zero() && retry_after <= MINUTE);
        }
        ref other => panic!("expected one Limited decision, found {other:?}"),
    }
    assert_eq!(
        limiter.check(&[phone(2)]).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
}

/// The recipients of one request are decided in order, each on its own; allowed
/// ones stay counted when another is limited.
pub async fn each_recipient_of_a_request_is_decided_on_its_own(backend: &dyn Backend) {
    let limiter = backend
        .recipients(vec![RecipientWindow::new(1, MINUTE)])
        .await;
    assert_eq!(
        limiter.check(&[phone(3)]).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    let decisions = limiter
        .check(&[phone(1), phone(2), phone(3), phone(1)])
        .await
        .unwrap();
    assert!(decisions[0] == RecipientDecision::Allowed);
    assert!(decisions[1] == RecipientDecision::Allowed);
    assert!(matches!(decisions[2], RecipientDecision::Limited { .. }));
    // Listed twice: the second is checked after the first was counted.
    assert!(matches!(decisions[3], RecipientDecision::Limited { .. }));
    assert_eq!(decisions.len(), 4);
    // Allowed recipients were counted even though another one was limited.
    assert!(matches!(
        limiter.check(&[phone(2)]).await.unwrap()[..],
        [RecipientDecision::Limited { .. }]
    ));
    assert!(limiter.check(&[]).await.unwrap().is_empty());
}

/// Every window applies at once, and a limited message is counted in none of them.
pub async fn every_window_applies_and_a_limited_message_is_not_counted(backend: &dyn Backend) {
    let short = Duration::from_millis(400);
    let limiter = backend
        .recipients(vec![
            RecipientWindow::new(1, short),
            RecipientWindow::new(3, MINUTE),
        ])
        .await;
    let number = [phone(7)];
    assert_eq!(
        limiter.check(&number).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    // Limited by the short window; must not use up the long window.
    assert!(matches!(
        limiter.check(&number).await.unwrap()[..],
        [RecipientDecision::Limited { window, limit: 1, .. }] if window == short
    ));
    backend.advance(Duration::from_millis(500)).await;
    assert_eq!(
        limiter.check(&number).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    backend.advance(Duration::from_millis(500)).await;
    // Third counted message: allowed only because the limited one was not counted.
    assert_eq!(
        limiter.check(&number).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    backend.advance(Duration::from_millis(500)).await;
    // The short window is free again, but the long one is full.
    match limiter.check(&number).await.unwrap()[..] {
        [
            RecipientDecision::Limited {
                window,
                limit,
                retry_after,
            },
        ] => {
            assert_eq!((window, limit), (MINUTE, 3));
            assert!(retry_after > Duration::from_secs(55) && retry_after <= MINUTE);
        }
        ref other => panic!("expected the long window to be full, found {other:?}"),
    }
}

fn assert_limited(decisions: &[RecipientDecision], expected: (Duration, u32)) {
    match decisions {
        [RecipientDecision::Limited { window, limit, .. }] => {
            assert_eq!((*window, *limit), expected, "the full window")
        }
        other => panic!("expected one Limited decision, found {other:?}"),
    }
}

/// A message given back no longer counts: the recipient may receive again within
/// the same window. Only that one message is given back, not the whole count.
pub async fn a_given_back_message_no_longer_counts(backend: &dyn Backend) {
    let limiter = backend
        .recipients(vec![RecipientWindow::new(1, MINUTE)])
        .await;
    let number = [phone(11)];
    assert_eq!(
        limiter.check(&number).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    // Without giving it back, the recipient stays limited.
    assert_limited(&limiter.check(&number).await.unwrap(), (MINUTE, 1));
    limiter.give_back(&number).await.unwrap();
    assert_eq!(
        limiter.check(&number).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    assert_limited(&limiter.check(&number).await.unwrap(), (MINUTE, 1));
}

/// A message is given back in every window, not only in the one that was full.
pub async fn a_message_is_given_back_in_every_window(backend: &dyn Backend) {
    let hour = 60 * MINUTE;
    let limiter = backend
        .recipients(vec![
            RecipientWindow::new(1, MINUTE),
            RecipientWindow::new(2, hour),
        ])
        .await;
    let number = [phone(12)];
    // Three messages within the minute, two given back: neither window ever holds
    // more than one, so each is allowed. Had the hour window kept its counts, the
    // third would be limited by it.
    for _ in 0..2 {
        assert_eq!(
            limiter.check(&number).await.unwrap(),
            vec![RecipientDecision::Allowed]
        );
        limiter.give_back(&number).await.unwrap();
    }
    assert_eq!(
        limiter.check(&number).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    assert_limited(&limiter.check(&number).await.unwrap(), (MINUTE, 1));
}

/// A recipient listed twice in a give-back gets two messages back; others listed
/// alongside get theirs back too.
pub async fn a_recipient_listed_twice_gets_two_counts_back(backend: &dyn Backend) {
    let limiter = backend
        .recipients(vec![RecipientWindow::new(2, MINUTE)])
        .await;
    let twice = [phone(13), phone(14), phone(13)];
    let all_allowed = vec![RecipientDecision::Allowed; 3];
    assert_eq!(limiter.check(&twice).await.unwrap(), all_allowed);
    assert_eq!(
        limiter.check(&[phone(14)]).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    // Both recipients are full now.
    assert_limited(&limiter.check(&[phone(13)]).await.unwrap(), (MINUTE, 2));
    assert_limited(&limiter.check(&[phone(14)]).await.unwrap(), (MINUTE, 2));
    limiter.give_back(&twice).await.unwrap();
    // Two messages back for the first number, one for the second.
    assert_eq!(
        limiter
            .check(&[phone(13), phone(13), phone(14)])
            .await
            .unwrap(),
        all_allowed
    );
    assert_limited(&limiter.check(&[phone(13)]).await.unwrap(), (MINUTE, 2));
    assert_limited(&limiter.check(&[phone(14)]).await.unwrap(), (MINUTE, 2));
}

/// Giving back for a recipient with nothing counted does nothing: it earns no credit
/// for later, and other recipients keep their counts.
pub async fn giving_back_with_nothing_counted_changes_nothing(backend: &dyn Backend) {
    let limiter = backend
        .recipients(vec![RecipientWindow::new(1, MINUTE)])
        .await;
    limiter.give_back(&[]).await.unwrap();
    limiter.give_back(&[phone(15), phone(15)]).await.unwrap();
    assert_eq!(
        limiter.check(&[phone(15)]).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    assert_limited(&limiter.check(&[phone(15)]).await.unwrap(), (MINUTE, 1));

    assert_eq!(
        limiter.check(&[phone(16)]).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    limiter.give_back(&[phone(17)]).await.unwrap();
    assert_limited(&limiter.check(&[phone(16)]).await.unwrap(), (MINUTE, 1));
}

/// Generates one `#[tokio::test]` per case of the limiter contract
/// ([`testing::limiter_contract`](crate::testing::limiter_contract)), each on a fresh
/// backend.
///
/// `$make` is called with the test's name and returns a future of
/// `Option<impl Backend>`; `None` skips the test. The test runs the case, then
/// [`Backend::cleanup`](crate::testing::limiter_contract::Backend::cleanup).
#[macro_export]
macro_rules! limiter_contract_tests {
    ($make:expr) => {
        $crate::limiter_contract_tests!(@tests $make;
            allows_exactly_the_limit_then_limits,
            a_concurrent_burst_gets_exactly_the_limit,
            several_permits_are_taken_all_or_nothing,
            the_window_slides,
            the_normal_lane_leaves_the_high_lane_its_headroom,
            high_priority_permits_count_against_the_normal_ceiling,
            a_normal_request_above_the_ceiling_goes_alone_in_an_empty_window,
            without_headroom_the_normal_lane_gets_the_whole_window,
            one_message_per_window_then_limited_others_unaffected,
            each_recipient_of_a_request_is_decided_on_its_own,
            every_window_applies_and_a_limited_message_is_not_counted,
            a_given_back_message_no_longer_counts,
            a_message_is_given_back_in_every_window,
            a_recipient_listed_twice_gets_two_counts_back,
            giving_back_with_nothing_counted_changes_nothing,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(backend) = $make(stringify!($name)).await else {
                    return;
                };
                $crate::testing::limiter_contract::$name(&backend).await;
                $crate::testing::limiter_contract::Backend::cleanup(&backend).await;
            }
        )+
    };
}
