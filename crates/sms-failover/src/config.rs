//! Tuning of the send path: health thresholds, timeouts, cooldowns, retries and the drain.
//!
//! Every duration is written in configuration files as a plain number with its unit in the
//! key (`slow_threshold_ms = 1000`, `cooldown_s = 30`), so no duration syntax has to be
//! parsed and no unit can be guessed wrong.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::FailoverError;

/// What a timed-out attempt of a live request does. (A drained message that times out is
/// always requeued, marked `may_duplicate`: its caller was already told "queued".)
///
/// A timeout is an unknown outcome: the vendor may have accepted the message. Requeueing
/// gives at-least-once delivery (the recipient may get it twice, and the answer says so);
/// failing gives at-most-once from the gateway's side (the caller decides).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutPolicy {
    /// Store the message for a later attempt, marked `may_duplicate` (default).
    #[default]
    Requeue,
    /// Tell the caller `SendError::TimedOut`; nothing is retried.
    Fail,
}

/// Longest retry horizon: a message older than a year is not a notice anyone waits for.
const MAX_RETRY_HORIZON: Duration = Duration::from_secs(365 * 24 * 3600);

/// Tuning of the gateway. Every field has a default (see each field), so an empty
/// section is valid; a key it does not know is an error naming that key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverConfig {
    /// Consecutive failures charged to the current vendor that make the gateway switch
    /// away from it: it switches on exactly the N-th one. Default 2.
    pub consecutive_failures: u32,
    /// A delivered send slower than this counts as one failure of its vendor (the
    /// message is still reported sent). Key `slow_threshold_ms`, default 1000.
    #[serde(rename = "slow_threshold_ms", with = "millis")]
    pub slow_threshold: Duration,
    /// Longest one vendor call may take before it counts as timed out.
    /// Key `attempt_timeout_ms`, default 5000.
    #[serde(rename = "attempt_timeout_ms", with = "millis")]
    pub attempt_timeout: Duration,
    /// How long a vendor switched away from rests before it is probed again. Repeated
    /// demotions within `flap_window` double it, up to `cooldown_max`.
    /// Key `cooldown_s`, default 30.
    #[serde(rename = "cooldown_s", with = "seconds")]
    pub cooldown: Duration,
    /// Longest cooldown after repeated demotions. Key `cooldown_max_s`, default 1800.
    #[serde(rename = "cooldown_max_s", with = "seconds")]
    pub cooldown_max: Duration,
    /// A vendor demoted again within this time of its previous demotion rests twice as
    /// long as the previous time. Key `flap_window_s`, default 600.
    #[serde(rename = "flap_window_s", with = "seconds")]
    pub flap_window: Duration,
    /// Consecutive fast successful probes a cheaper vendor needs, after its cooldown,
    /// before it becomes current again. Default 3.
    pub probe_successes: u32,
    /// While a cheaper vendor can be probed, one attempt in this many goes to it.
    /// Default 10.
    pub probe_every: u32,
    /// What a timeout of a live request does. Default `requeue`.
    pub on_timeout: TimeoutPolicy,
    /// Attempts a queued message gets (the first live attempt included). A message is
    /// dead once it has had them all *and* `retry_horizon` has passed since it was
    /// accepted (or at its deadline, which expires it). Default 10.
    pub max_attempts: u32,
    /// How long a failed message is retried, from when it was accepted, however many
    /// attempts that takes: an outage of every vendor for hours kills nothing younger.
    /// A message with a deadline expires at it if that comes first. 0 leaves
    /// `max_attempts` alone to decide. At most 8760 (a year).
    /// Key `retry_horizon_h`, default 24.
    #[serde(rename = "retry_horizon_h", with = "hours")]
    pub retry_horizon: Duration,
    /// Base of the exponential retry backoff (full jitter). Key `backoff_base_ms`,
    /// default 1000.
    #[serde(rename = "backoff_base_ms", with = "millis")]
    pub backoff_base: Duration,
    /// Cap of the retry backoff. Key `backoff_max_s`, default 300.
    #[serde(rename = "backoff_max_s", with = "seconds")]
    pub backoff_max: Duration,
    /// How long a claimed message stays leased to this instance. Must exceed
    /// `attempt_timeout`, or a slow attempt could be claimed and sent by another drainer.
    /// Key `lease_s`, default 30.
    #[serde(rename = "lease_s", with = "seconds")]
    pub lease: Duration,
    /// Messages claimed per batch. Default 100.
    pub drain_batch: u32,
    /// Fewest messages of a batch sent at the same time (each lane sends its share in
    /// order). The drain keeps more in flight when the global limit and the vendors'
    /// latency call for it, up to `drain_concurrency_max`. Default 8.
    pub drain_concurrency: u32,
    /// Most drained messages sent at the same time: the drain aims for 90% of the global
    /// limit (the rest is left to live requests), which takes about limit × vendor
    /// latency sends in flight, and never more than this. Default 512.
    pub drain_concurrency_max: u32,
    /// Most batches one drain pass claims, so a pass ends even when messages keep
    /// becoming due. Default 50.
    pub drain_max_batches: u32,
    /// Share of each drain claim kept for normal-priority messages while high-priority
    /// ones are due, from 0 to 1, so that bulk is never starved by a flood of codes.
    /// Default 0.1.
    pub normal_min_share: f64,
    /// Period of the drainer's tick. Key `drain_interval_ms`, default 1000. The drainer
    /// also wakes when the earliest queued message falls due (a scheduled send).
    #[serde(rename = "drain_interval_ms", with = "millis")]
    pub drain_interval: Duration,
    /// UTC offset of the billing calendar in hours; a billing period is a calendar
    /// month there. Default 8 (vendors in China bill in Beijing time).
    pub billing_utc_offset_hours: i32,
    /// Name of this instance as a lease owner. Default `<hostname>-<pid>`.
    pub instance_id: String,
    /// Delivery receipts per vendor the delivery rate is judged over: a vendor whose
    /// last this many receipts delivered less than `min_delivery_rate` is demoted like a
    /// failing one. At least 50; 0 turns receipt-aware failover off. Default 200.
    pub receipt_window: u32,
    /// The lowest delivery rate over `receipt_window` receipts a vendor keeps its place
    /// with, from 0 to 1. Default 0.9.
    pub min_delivery_rate: f64,
    /// How long a vendor that sends receipts may go without one while it accepts
    /// messages (at least 50 of them) before it is demoted: its receipts stopped, which
    /// is how a silent failure often looks. 0 turns this off; a vendor that never sent
    /// a receipt is never judged by it. Key `receipt_silence_s`, default 300.
    #[serde(rename = "receipt_silence_s", with = "seconds")]
    pub receipt_silence: Duration,
}

/// The fewest receipts a delivery rate is judged over.
pub const MIN_RECEIPT_WINDOW: u32 = 50;

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 2,
            slow_threshold: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(5),
            cooldown: Duration::from_secs(30),
            cooldown_max: Duration::from_secs(30 * 60),
            flap_window: Duration::from_secs(10 * 60),
            probe_successes: 3,
            probe_every: 10,
            on_timeout: TimeoutPolicy::Requeue,
            max_attempts: 10,
            retry_horizon: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            lease: Duration::from_secs(30),
            drain_batch: 100,
            drain_concurrency: 8,
            drain_concurrency_max: 512,
            drain_max_batches: 50,
            normal_min_share: 0.1,
            drain_interval: Duration::from_secs(1),
            billing_utc_offset_hours: 8,
            instance_id: default_instance_id(),
            receipt_window: 200,
            min_delivery_rate: 0.9,
            receipt_silence: Duration::from_secs(300),
        }
    }
}

/// `<hostname>-<pid>`: unique among instances on distinct hosts and among processes on
/// one host, and readable for operators looking at a lease.
fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| format!("sms-{:08x}", rand::random::<u32>()));
    format!("{host}-{}", std::process::id())
}

impl FailoverConfig {
    /// Checks the values that would make the gateway misbehave.
    pub fn validate(&self) -> Result<(), FailoverError> {
        let bad = |field: &'static str, problem: String| {
            Err(FailoverError::InvalidConfig { field, problem })
        };
        if self.receipt_window != 0 && self.receipt_window < MIN_RECEIPT_WINDOW {
            return bad(
                "receipt_window",
                format!(
                    "expected 0 (off) or at least {MIN_RECEIPT_WINDOW} receipts, found {}; \
                     fewer say too little about a vendor",
                    self.receipt_window
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.min_delivery_rate) {
            return bad(
                "min_delivery_rate",
                format!(
                    "expected a share from 0 to 1, found {}",
                    self.min_delivery_rate
                ),
            );
        }
        if self.consecutive_failures == 0 {
            return bad(
                "consecutive_failures",
                "expected at least 1, found 0".into(),
            );
        }
        if self.attempt_timeout.is_zero() {
            return bad("attempt_timeout_ms", "expected at least 1, found 0".into());
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "expected at least 1, found 0".into());
        }
        if !(0.0..=1.0).contains(&self.normal_min_share) {
            return bad(
                "normal_min_share",
                format!(
                    "expected a share from 0 to 1, found {}",
                    self.normal_min_share
                ),
            );
        }
        if self.drain_batch == 0 {
            return bad("drain_batch", "expected at least 1, found 0".into());
        }
        if self.drain_concurrency == 0 {
            return bad("drain_concurrency", "expected at least 1, found 0".into());
        }
        if self.drain_concurrency_max < self.drain_concurrency {
            return bad(
                "drain_concurrency_max",
                format!(
                    "expected at least drain_concurrency ({}), found {}",
                    self.drain_concurrency, self.drain_concurrency_max
                ),
            );
        }
        if self.drain_max_batches == 0 {
            return bad("drain_max_batches", "expected at least 1, found 0".into());
        }
        if self.probe_successes == 0 || self.probe_every == 0 {
            return bad(
                "probe_successes",
                "probe_successes and probe_every must be at least 1".into(),
            );
        }
        if self.drain_interval.is_zero() {
            return bad("drain_interval_ms", "expected at least 1, found 0".into());
        }
        if self.retry_horizon > MAX_RETRY_HORIZON {
            return bad(
                "retry_horizon_h",
                format!(
                    "expected at most {} (a year), found {}",
                    MAX_RETRY_HORIZON.as_secs() / 3600,
                    self.retry_horizon.as_secs() / 3600
                ),
            );
        }
        if self.backoff_base.is_zero() {
            return bad("backoff_base_ms", "expected at least 1, found 0".into());
        }
        if self.backoff_max < self.backoff_base {
            return bad(
                "backoff_max_s",
                format!(
                    "expected at least backoff_base ({:?}), found {:?}",
                    self.backoff_base, self.backoff_max
                ),
            );
        }
        if self.lease <= self.attempt_timeout {
            return bad(
                "lease_s",
                format!(
                    "expected a lease longer than attempt_timeout ({:?}), found {:?}",
                    self.attempt_timeout, self.lease
                ),
            );
        }
        if !(-12..=14).contains(&self.billing_utc_offset_hours) {
            return bad(
                "billing_utc_offset_hours",
                format!(
                    "expected -12 to 14, found {}",
                    self.billing_utc_offset_hours
                ),
            );
        }
        if self.instance_id.trim().is_empty() {
            return bad("instance_id", "must not be empty".into());
        }
        Ok(())
    }
}

/// Durations as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Durations as whole seconds.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

mod hours {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs() / 3600)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(|h| Duration::from_secs(h.saturating_mul(3600)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_gives_the_documented_defaults() {
        let c: FailoverConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.consecutive_failures, 2);
        assert_eq!(c.slow_threshold, Duration::from_secs(1));
        assert_eq!(c.attempt_timeout, Duration::from_secs(5));
        assert_eq!(c.cooldown, Duration::from_secs(30));
        assert_eq!(c.retry_horizon, Duration::from_secs(24 * 3600));
        assert_eq!(c.on_timeout, TimeoutPolicy::Requeue);
        assert_eq!(c.max_attempts, 10);
        assert_eq!(c.backoff_base, Duration::from_secs(1));
        assert_eq!(c.backoff_max, Duration::from_secs(300));
        assert_eq!(c.lease, Duration::from_secs(30));
        assert_eq!(c.drain_batch, 100);
        assert_eq!(c.drain_interval, Duration::from_secs(1));
        assert_eq!(c.billing_utc_offset_hours, 8);
        assert!(!c.instance_id.is_empty());
        c.validate().unwrap();
    }

    #[test]
    fn durations_are_read_as_plain_numbers_with_the_unit_in_the_key() {
        let c: FailoverConfig = serde_json::from_str(
            r#"{"slow_threshold_ms": 250, "cooldown_s": 5, "on_timeout": "fail", "instance_id": "a"}"#,
        )
        .unwrap();
        assert_eq!(c.slow_threshold, Duration::from_millis(250));
        assert_eq!(c.cooldown, Duration::from_secs(5));
        assert_eq!(c.on_timeout, TimeoutPolicy::Fail);
        let back: FailoverConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let e = serde_json::from_str::<FailoverConfig>(r#"{"consecutive_failure": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("consecutive_failure"), "{e}");
    }

    #[test]
    fn validation_names_the_bad_field() {
        let c = FailoverConfig {
            consecutive_failures: 0,
            ..FailoverConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("consecutive_failures")
        );
        let c = FailoverConfig {
            lease: Duration::from_secs(5),
            ..FailoverConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("lease_s"));
        let c = FailoverConfig {
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(5),
            ..FailoverConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("backoff_max_s")
        );
        let c = FailoverConfig {
            retry_horizon: Duration::from_secs(100_000 * 3600),
            ..FailoverConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("retry_horizon_h")
        );
        let c = FailoverConfig {
            billing_utc_offset_hours: 20,
            ..FailoverConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("billing_utc_offset_hours")
        );
    }
}
