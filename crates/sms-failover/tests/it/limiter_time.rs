//! Time a request spends on the limiters is not the vendor's: a vendor call is timed
//! from just before it starts.

use std::sync::Arc;
use std::time::Duration;

use sms_core::testing::{ManualClock, MemoryLedger, MemoryQueue};
use sms_core::{LimitError, RateDecision, RecipientDecision};
use sms_failover::{Gateway, GatewayEvent, SendOutcome, VendorEntry};

use crate::support::*;

/// A gateway's global and per-recipient limiters.
type Limiters = (
    Arc<dyn sms_core::RateLimiter>,
    Option<Arc<dyn sms_core::RecipientLimiter>>,
);

/// A global limiter that allows everything after a wait, like a Redis round trip.
struct WaitingLimiter(Duration);

#[async_trait::async_trait]
impl sms_core::RateLimiter for WaitingLimiter {
    async fn acquire(&self, _permits: u32) -> Result<RateDecision, LimitError> {
        tokio::time::sleep(self.0).await;
        Ok(RateDecision::Allowed)
    }
}

/// A recipient limiter that allows everything after a wait.
struct WaitingRecipients(Duration);

#[async_trait::async_trait]
impl sms_core::RecipientLimiter for WaitingRecipients {
    async fn check(
        &self,
        recipients: &[sms_core::PhoneNumber],
    ) -> Result<Vec<RecipientDecision>, LimitError> {
        tokio::time::sleep(self.0).await;
        Ok(vec![RecipientDecision::Allowed; recipients.len()])
    }
}

#[tokio::test(start_paused = true)]
async fn time_spent_waiting_on_the_limiters_is_not_the_vendors_latency() {
    // The gateway times a vendor call from just before the call. Limiters that take
    // longer than the slow threshold must not make an instant vendor slow.
    let wait = Duration::from_millis(1500);
    let waiting_global: Limiters = (Arc::new(WaitingLimiter(wait)), None);
    let waiting_recipients: Limiters = (
        Arc::new(AllowAll::default()),
        Some(Arc::new(WaitingRecipients(wait))),
    );
    for (limiter, recipients) in [waiting_global, waiting_recipients] {
        let vendor = FakeVendor::new("aliyun");
        let events = Arc::new(Recorder::default());
        let mut builder = Gateway::builder(
            vec![VendorEntry {
                vendor: vendor.clone(),
                fees: flat(45_000),
            }],
            limiter,
            Arc::new(MemoryQueue::new()),
            Arc::new(MemoryLedger::new()),
        )
        .clock(Arc::new(ManualClock::new(start())))
        .config(config())
        .observer(events.clone());
        if let Some(recipients) = recipients {
            builder = builder.recipient_limiter(recipients);
        }
        let gateway = builder.build().unwrap();
        let started = tokio::time::Instant::now();
        let outcome = gateway.send(request()).await.unwrap();
        assert!(started.elapsed() >= wait, "the limiter did not wait");
        assert!(
            matches!(outcome, SendOutcome::Sent { slow: false, .. }),
            "{outcome:?}"
        );
        let latencies: Vec<Duration> = events
            .events()
            .into_iter()
            .filter_map(|e| match e {
                GatewayEvent::Attempt { latency, .. } => Some(latency),
                _ => None,
            })
            .collect();
        assert_eq!(latencies, [Duration::ZERO]);
    }
}
