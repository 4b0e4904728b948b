//! The contract run against the in-process limiters, on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sms_core::{RateLimiter, RecipientLimiter};
use sms_limit::{
    InProcessLimiter, InProcessRecipientLimiter, ManualMonotonicClock, RecipientWindow,
};

use crate::contract::{Backend, limiter_contract_tests};

/// In-process limiters sharing one manual clock.
struct InProcess {
    clock: ManualMonotonicClock,
}

#[async_trait]
impl Backend for InProcess {
    async fn global(&self, limit: u32, window: Duration) -> Arc<dyn RateLimiter> {
        Arc::new(InProcessLimiter::with_clock(limit, window, Arc::new(self.clock.clone())).unwrap())
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

limiter_contract_tests!(in_process);

#[tokio::test]
async fn the_real_clock_limits_too() {
    // The contract uses a manual clock; this checks the default clock is wired in.
    let limiter = InProcessLimiter::new(2, Duration::from_secs(60)).unwrap();
    assert!(limiter.acquire(2).await.unwrap().is_allowed());
    assert!(!limiter.acquire(1).await.unwrap().is_allowed());
}
