//! Delays: exponential backoff with full jitter, retries of store writes, and the
//! instant a delay ends.
//!
//! Full jitter (a uniform delay between zero and the exponential cap) spreads retries of
//! messages that failed together, so a recovering vendor is not hit by all of them at
//! once.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sms_core::StoreError;

/// The instant `delay` after `now`; the end of time for a delay too long to represent.
pub fn after(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(delay)
        .ok()
        .and_then(|delay| now.checked_add_signed(delay))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The delay before the retry that follows failed attempt number `attempt` (1-based):
/// `unit × min(max, base × 2^(attempt-1))`, where `unit` is a uniform random number in
/// `[0, 1]` (taken as a parameter so the function stays pure and testable).
pub fn backoff_delay(attempt: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(63);
    let ceiling = base
        .checked_mul(1u32.checked_shl(exponent.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// [`backoff_delay`] with a fresh random `unit`.
pub fn jittered_backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    backoff_delay(attempt, base, max, rand::random::<f64>())
}

/// Runs `op` until it succeeds, fails with anything but [`StoreError::Unavailable`], or
/// has been tried `tries` times, waiting `first`, doubling up to `max`, between tries.
/// Returns the last answer.
pub async fn retry_while_unavailable<T, F, Fut>(
    tries: u32,
    first: Duration,
    max: Duration,
    what: &str,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut delay = first;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(StoreError::Unavailable(e)) if attempt < tries => {
                tracing::debug!(attempt, error = %e, "{what}: the store is unavailable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max);
                attempt += 1;
            }
            answer => return answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(300);
        assert_eq!(backoff_delay(1, base, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(2, base, max, 1.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(5, base, max, 1.0), Duration::from_secs(16));
        assert_eq!(backoff_delay(9, base, max, 1.0), Duration::from_secs(256));
        assert_eq!(backoff_delay(10, base, max, 1.0), max);
        assert_eq!(backoff_delay(1000, base, max, 1.0), max);
        assert_eq!(backoff_delay(5, base, max, 0.0), Duration::ZERO);
        assert_eq!(backoff_delay(5, base, max, 0.5), Duration::from_secs(8));
    }

    proptest! {
        #[test]
        fn never_exceeds_the_cap_or_the_exponential(attempt in 0u32..200, unit in 0.0f64..=1.0, base_ms in 1u64..5000, max_s in 1u64..1000) {
            let base = Duration::from_millis(base_ms);
            let max = Duration::from_secs(max_s);
            let d = backoff_delay(attempt, base, max, unit);
            prop_assert!(d <= max);
            if attempt <= 20 {
                prop_assert!(d <= base * 2u32.pow(attempt.saturating_sub(1)));
            }
        }
    }
}
