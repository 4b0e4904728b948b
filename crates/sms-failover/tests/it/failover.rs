//! Switching: exactly N failures, cheapest healthy next, ties, cooldown, recovery,
//! operator switches, and races between concurrent failures.

use std::sync::Arc;
use std::time::Duration;

use sms_core::testing::MemoryQueue;
use sms_core::{DeferredQueue, Money, SendError, UsageLedger, VendorId};
use sms_failover::{FailoverConfig, GatewayEvent, SendOutcome};

use crate::support::*;

async fn fail_once(h: &Harness) {
    let vendor = h.gateway.current_vendor();
    h.vendor(vendor.as_str()).then(transient());
    let outcome = h.gateway.send(request()).await.unwrap();
    assert!(matches!(outcome, SendOutcome::Queued { .. }), "{outcome:?}");
}

#[tokio::test]
async fn switches_after_exactly_n_consecutive_failures() {
    // The switch comes on exactly the N-th failure, not on the one after it.
    for n in [1u32, 2, 3, 5] {
        let h = Harness::new(
            &[("aliyun", 40_000), ("tencent", 45_000)],
            FailoverConfig {
                consecutive_failures: n,
                ..config()
            },
        );
        for i in 1..n {
            fail_once(&h).await;
            assert_eq!(h.current(), "aliyun", "n = {n}: switched after only {i}");
        }
        fail_once(&h).await;
        assert_eq!(h.current(), "tencent", "n = {n}: no switch after {n}");
        assert_eq!(h.events.switches(), [("aliyun".into(), "tencent".into())]);
    }
}

#[tokio::test]
async fn a_fast_success_resets_the_failure_count() {
    let h = Harness::new(&[("aliyun", 40_000), ("tencent", 45_000)], config());
    fail_once(&h).await;
    h.gateway.send(request()).await.unwrap();
    fail_once(&h).await;
    assert_eq!(h.current(), "aliyun");
    assert_eq!(h.failures_of("aliyun"), 1);
}

#[tokio::test]
async fn the_next_vendor_is_the_cheapest_healthy_one_not_the_next_in_price_order() {
    // Taking the vendor after the current one in price order could land on one known
    // to be down and would never go back to the cheap one.
    let h = Harness::new(
        &[("aliyun", 40_000), ("tencent", 45_000), ("cloopen", 47_000)],
        config(),
    );
    fail_once(&h).await;
    fail_once(&h).await;
    assert_eq!(h.current(), "tencent");
    // Aliyun has rested (cooldown 30 s); tencent now fails. Price order after tencent
    // is cloopen, but aliyun is healthy again and cheaper.
    h.clock.advance(Duration::from_secs(31));
    fail_once(&h).await;
    fail_once(&h).await;
    assert_eq!(h.current(), "aliyun");
}

#[tokio::test]
async fn a_vendor_cooling_down_is_skipped() {
    let h = Harness::new(
        &[("aliyun", 40_000), ("tencent", 45_000), ("cloopen", 47_000)],
        config(),
    );
    fail_once(&h).await;
    fail_once(&h).await;
    h.clock.advance(Duration::from_secs(5));
    fail_once(&h).await;
    fail_once(&h).await;
    // Aliyun is still cooling down (until 30 s): cloopen, though dearer.
    assert_eq!(h.current(), "cloopen");
    let snapshot = h.gateway.vendors();
    assert!(snapshot[0].cooling_down_until.is_some());
    assert!(snapshot[1].cooling_down_until.is_some());
    assert!(snapshot[2].is_current && snapshot[2].cooling_down_until.is_none());
}

#[tokio::test]
async fn equal_prices_go_to_the_vendor_configured_first() {
    let h = Harness::new(
        &[("aliyun", 40_000), ("tencent", 45_000), ("cloopen", 45_000)],
        config(),
    );
    fail_once(&h).await;
    fail_once(&h).await;
    assert_eq!(h.current(), "tencent");
    let h = Harness::new(
        &[("cloopen", 45_000), ("tencent", 45_000), ("aliyun", 45_000)],
        config(),
    );
    assert_eq!(h.current(), "cloopen");
}

#[tokio::test]
async fn when_every_vendor_rests_the_first_whose_rest_ends_takes_over() {
    let h = Harness::new(
        &[("aliyun", 40_000), ("tencent", 45_000), ("cloopen", 47_000)],
        config(),
    );
    for _ in 0..2 {
        fail_once(&h).await;
    }
    h.clock.advance(Duration::from_secs(1));
    for _ in 0..2 {
        fail_once(&h).await;
    }
    h.clock.advance(Duration::from_secs(1));
    for _ in 0..2 {
        fail_once(&h).await;
    }
    // All three rest: no switch to a resting vendor, and no call while they rest.
    assert_eq!(h.current(), "cloopen");
    let calls = |h: &Harness| h.vendors.iter().map(|v| v.calls()).sum::<usize>();
    let before = calls(&h);
    let outcome = h.gateway.send(request()).await.unwrap();
    assert!(matches!(outcome, SendOutcome::Queued { .. }), "{outcome:?}");
    assert_eq!(calls(&h), before);
    // aliyun's rest (from t=0) ends first: it takes over.
    h.clock.advance(Duration::from_secs(28));
    let outcome = h.gateway.send(request()).await.unwrap();
    assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
    assert_eq!(h.vendor("aliyun").calls(), 3);
    assert_eq!(h.current(), "aliyun");
    assert_eq!(
        h.events.switches(),
        [
            ("aliyun".into(), "tencent".into()),
            ("tencent".into(), "cloopen".into()),
            ("cloopen".into(), "aliyun".into()),
        ]
    );
}

#[tokio::test]
async fn a_rested_cheaper_vendor_becomes_current_after_good_probes() {
    let h = Harness::new(
        &[("aliyun", 40_000), ("tencent", 45_000)],
        FailoverConfig {
            probe_every: 2,
            probe_successes: 3,
            ..config()
        },
    );
    fail_once(&h).await;
    fail_once(&h).await;
    assert_eq!(h.current(), "tencent");
    // While it rests, nothing goes to aliyun.
    let before = h.vendor("aliyun").calls();
    for _ in 0..6 {
        h.gateway.send(request()).await.unwrap();
    }
    assert_eq!(h.vendor("aliyun").calls(), before);
    h.clock.advance(Duration::from_secs(30));
    // Once it has rested, one send in two probes aliyun (where the count of sends starts
    // is not part of the rule), and the third good probe makes it current.
    let mut went_to = Vec::new();
    while h.current() != "aliyun" && went_to.len() < 10 {
        let outcome = h.gateway.send(request()).await.unwrap();
        let SendOutcome::Sent { vendor, .. } = outcome else {
            panic!("expected a delivery, got {outcome:?}");
        };
        went_to.push(vendor.as_str().to_owned());
    }
    assert_eq!(h.current(), "aliyun", "{went_to:?}");
    assert_eq!(
        went_to.iter().filter(|v| *v == "aliyun").count(),
        3,
        "{went_to:?}"
    );
    assert_eq!(h.vendor("aliyun").calls(), before + 3);
    assert!(
        went_to.windows(2).all(|pair| pair[0] != pair[1]),
        "one send in two probes aliyun: {went_to:?}"
    );
    assert_eq!(went_to.last().map(String::as_str), Some("aliyun"));
    let last = h.events.events().into_iter().rev().find_map(|e| match e {
        GatewayEvent::Switched { to, reason, .. } => Some((to, reason)),
        _ => None,
    });
    let (to, reason) = last.unwrap();
    assert_eq!(to.as_str(), "aliyun");
    assert!(reason.contains("probes"), "{reason}");
}

#[tokio::test]
async fn a_failing_probe_does_not_touch_the_current_vendor_and_rests_longer() {
    let h = Harness::new(
        &[("aliyun", 40_000), ("tencent", 45_000)],
        FailoverConfig {
            probe_every: 1,
            ..config()
        },
    );
    fail_once(&h).await;
    fail_once(&h).await;
    h.clock.advance(Duration::from_secs(30));
    h.vendor("aliyun").then(transient());
    let outcome = h.gateway.send(request()).await.unwrap();
    assert!(matches!(outcome, SendOutcome::Queued { .. }));
    assert_eq!(h.current(), "tencent");
    assert_eq!(h.failures_of("tencent"), 0);
    let until = h.gateway.vendors()[0].cooling_down_until.unwrap();
    assert_eq!(until, h.clock_now() + chrono::Duration::seconds(60));
}

impl Harness {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use sms_core::Clock;
        self.clock.now()
    }
}

// Worker threads make the tasks really run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_failures_switch_exactly_once_per_episode_and_never_skip_a_vendor() {
    // The vendor index and the failure count change together: read separately,
    // concurrent failures would switch several times and skip vendors.
    const TASKS: usize = 200;
    let h = Harness::new(
        &[("aliyun", 40_000), ("tencent", 45_000), ("cloopen", 47_000)],
        config(),
    );
    for (episode, (from, to)) in [("aliyun", "tencent"), ("tencent", "cloopen")]
        .into_iter()
        .enumerate()
    {
        assert_eq!(h.current(), from);
        // Every send waits until all of them are in flight, then all fail.
        h.vendor(from).always(transient());
        h.vendor(from)
            .gate(Arc::new(tokio::sync::Barrier::new(TASKS)));
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let gateway = h.gateway.clone();
            tasks.push(tokio::spawn(async move { gateway.send(request()).await }));
        }
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Ok(SendOutcome::Queued { .. })));
        }
        assert_eq!(h.current(), to, "episode {episode}");
        assert_eq!(h.events.switches().len(), episode + 1, "episode {episode}");
        // None of the late failures was charged to the new vendor.
        assert_eq!(h.failures_of(to), 0);
        assert_eq!(h.vendor(to).calls(), 0);
    }
}

#[tokio::test]
async fn the_operator_can_disable_and_enable_vendors() {
    let h = Harness::new(&[("aliyun", 40_000), ("tencent", 45_000)], config());
    let aliyun = VendorId::new("aliyun").unwrap();
    h.gateway.disable(&aliyun).await.unwrap();
    assert_eq!(h.current(), "tencent");
    assert!(h.gateway.vendors()[0].disabled);
    // A disabled vendor is never chosen, even when the current one fails.
    fail_once(&h).await;
    fail_once(&h).await;
    assert_eq!(h.current(), "tencent");
    let unknown = VendorId::new("nobody").unwrap();
    assert!(h.gateway.disable(&unknown).await.is_err());
    h.gateway.enable(&aliyun).await.unwrap();
    assert!(!h.gateway.vendors()[0].disabled);
}

#[tokio::test]
async fn start_up_loads_this_periods_volumes_and_picks_the_cheapest() {
    // Billed volumes live in the shared ledger: counts kept in memory only would be
    // lost on restart and never start again with the month.
    let queue = Arc::new(MemoryQueue::new());
    let fakes = vec![FakeVendor::new("aliyun"), FakeVendor::new("tencent")];
    let fees: Vec<Arc<dyn sms_core::FeeSchedule>> = vec![
        Arc::new(Tiers(vec![(100_000, 45_000), (u64::MAX, 40_000)])),
        flat(42_000),
    ];
    let h = Harness::with_fees(fakes, fees, config(), queue);
    assert_eq!(h.current(), "tencent", "at volume 0 tencent is cheaper");
    let period = sms_core::BillingPeriod::from_label("2026-11");
    h.ledger
        .add(&VendorId::new("aliyun").unwrap(), &period, 150_000)
        .await
        .unwrap();
    // Last month's volume does not count.
    h.ledger
        .add(
            &VendorId::new("tencent").unwrap(),
            &sms_core::BillingPeriod::from_label("2026-10"),
            9_000_000,
        )
        .await
        .unwrap();
    h.gateway.init().await.unwrap();
    assert_eq!(h.current(), "aliyun");
    let snapshot = h.gateway.vendors();
    assert_eq!(snapshot[0].billed_this_period, 150_000);
    assert_eq!(snapshot[0].price, Money::from_micros(40_000));
    assert_eq!(snapshot[1].billed_this_period, 0);
    assert_eq!(
        snapshot[0].spend,
        Money::from_micros(100_000 * 45_000 + 50_000 * 40_000)
    );
}

#[tokio::test]
async fn crossing_a_price_tier_is_billed_at_each_tiers_price() {
    let queue = Arc::new(MemoryQueue::new());
    let fees: Vec<Arc<dyn sms_core::FeeSchedule>> =
        vec![Arc::new(Tiers(vec![(3, 50_000), (u64::MAX, 40_000)]))];
    let h = Harness::with_fees(vec![FakeVendor::new("aliyun")], fees, config(), queue);
    h.gateway.send(request_to(5)).await.unwrap();
    let cost = h.events.events().into_iter().find_map(|e| match e {
        GatewayEvent::Attempt { cost, .. } => Some(cost),
        _ => None,
    });
    assert_eq!(cost, Some(Money::from_micros(3 * 50_000 + 2 * 40_000)));
}

// Worker threads make the tasks really run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_bill_exact_volumes_and_exact_spend() {
    // Concurrent sends must each be priced at their place in the tiers, with no count
    // read twice or lost.
    let queue = Arc::new(MemoryQueue::new());
    let fees: Vec<Arc<dyn sms_core::FeeSchedule>> =
        vec![Arc::new(Tiers(vec![(50, 50_000), (u64::MAX, 40_000)]))];
    let h = Harness::with_fees(vec![FakeVendor::new("aliyun")], fees, config(), queue);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let gateway = h.gateway.clone();
        tasks.push(tokio::spawn(async move {
            gateway.send(request()).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let snapshot = &h.gateway.vendors()[0];
    assert_eq!(snapshot.billed_this_period, 100);
    assert_eq!(
        snapshot.spend,
        Money::from_micros(50 * 50_000 + 50 * 40_000)
    );
    let _ = h.queue.stats().await.unwrap();
}

#[tokio::test]
async fn a_no_vendor_error_is_not_a_failure() {
    let h = Harness::new(&[("aliyun", 40_000)], config());
    h.gateway
        .disable(&VendorId::new("aliyun").unwrap())
        .await
        .unwrap();
    assert!(matches!(
        h.gateway.send(request()).await,
        Err(SendError::NoVendor(_))
    ));
    assert_eq!(h.vendor("aliyun").calls(), 0);
}
