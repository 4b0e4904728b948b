//! Limiter settings, as read from the application's configuration file.
//!
//! Every field has a default, so an empty `[limit]` table gives the documented
//! behaviour: 3000 messages per 1 s for the whole fleet, of which normal-priority
//! messages may use 2700 (a tenth is kept for high-priority ones), at most 1 message
//! per recipient per 60 s, 5 per hour and 10 per 24 h, fail open to in-process limiters
//! when Redis is unreachable.
//!
//! A client's own limits (`per_second`, `per_day`) are not set here: they belong to
//! the client's settings and are passed with each request to a client limiter, which
//! takes its Redis keys, timeouts and outage policy from this table.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::lane::{normal_ceiling, validate_headroom};
use crate::window::validate_window;

/// Re-exported from `sms-core`, where the limiter contract suite can name it too.
pub use sms_core::RecipientWindow;

/// Settings of the global, per-recipient and per-client limiters.
///
/// ```toml
/// global_per_second = 3000       # permits per window, shared by every instance
/// global_window_ms = 1000        # length of the sliding window
/// high_priority_headroom = 0.1   # share of the window normal messages leave to high ones
/// recipient_windows = [{ limit = 1, window_s = 60 }, { limit = 5, window_s = 3600 }, { limit = 10, window_s = 86400 }]
/// on_redis_error = "fail_open"   # or "fail_closed"
/// key_prefix = "sms:"
/// command_timeout_ms = 200
/// connect_timeout_ms = 2000
/// instances = 1                  # used to size the fail-open fallback
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitConfig {
    /// Permits per global window for the whole fleet. Default 3000.
    pub global_per_second: u32,
    /// Length of the global sliding window, in milliseconds. Default 1000; the
    /// field is named after the default so `global_per_second` reads naturally.
    pub global_window_ms: u64,
    /// Share of the global window kept for high-priority messages, from 0.0 up to (not
    /// including) 1.0. Normal ones stop at `global_per_second` minus that share
    /// (rounded to a whole permit), so a login code finds room however much bulk is
    /// being sent; a normal request larger than that still goes, alone, in an empty
    /// window. High-priority messages may use the whole window. Default 0.1; 0.0 lets
    /// both lanes share the whole window.
    pub high_priority_headroom: f64,
    /// Per-recipient windows, all enforced at once. Default 1 per 60 s, 5 per hour and
    /// 10 per 24 h: the strictest vendor defaults (Aliyun's), so that the gateway
    /// answers before a vendor's per-number limit does.
    pub recipient_windows: Vec<RecipientWindow>,
    /// What to do when Redis cannot be reached. Default `fail_open`.
    pub on_redis_error: RedisErrorPolicy,
    /// Prefix of every Redis key the limiters write (a client's under
    /// `{key_prefix}client:{name}:`). Default `sms:`.
    pub key_prefix: String,
    /// Upper bound on one Redis round trip, in milliseconds. Default 200.
    pub command_timeout_ms: u64,
    /// How long `connect` waits for the first connection before starting degraded,
    /// in milliseconds. Default 2000.
    pub connect_timeout_ms: u64,
    /// How many gateway instances share the global limit. A fail-open fallback
    /// allows this instance `global_per_second / instances` (at least 1), and each
    /// client the same share of its own limits. Default 1.
    pub instances: u32,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            global_per_second: 3000,
            global_window_ms: 1000,
            high_priority_headroom: 0.1,
            recipient_windows: vec![
                RecipientWindow::per_seconds(1, 60),
                RecipientWindow::per_seconds(5, 3_600),
                RecipientWindow::per_seconds(10, 86_400),
            ],
            on_redis_error: RedisErrorPolicy::FailOpen,
            key_prefix: "sms:".to_owned(),
            command_timeout_ms: 200,
            connect_timeout_ms: 2000,
            instances: 1,
        }
    }
}

impl LimitConfig {
    /// Checks every field; the error names the field and what was expected.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.global_per_second == 0 {
            return Err(ConfigError::new(
                "global_per_second",
                "expected at least 1, found 0",
            ));
        }
        if self.global_window_ms == 0 {
            return Err(ConfigError::new(
                "global_window_ms",
                "expected at least 1 ms, found 0",
            ));
        }
        validate_headroom(self.high_priority_headroom, "high_priority_headroom")?;
        for (index, window) in self.recipient_windows.iter().enumerate() {
            validate_window(window, &format!("recipient_windows[{index}]"))?;
        }
        if self.key_prefix.is_empty() {
            return Err(ConfigError::new(
                "key_prefix",
                "expected a non-empty prefix such as \"sms:\"",
            ));
        }
        if self.command_timeout_ms == 0 {
            return Err(ConfigError::new(
                "command_timeout_ms",
                "expected at least 1 ms, found 0",
            ));
        }
        if self.instances == 0 {
            return Err(ConfigError::new(
                "instances",
                "expected at least 1, found 0",
            ));
        }
        Ok(())
    }

    /// The global window as a duration.
    pub fn global_window(&self) -> Duration {
        Duration::from_millis(self.global_window_ms)
    }

    /// The most permits normal-priority messages may hold in one global window: the
    /// limit less the high lane's headroom. 2700 by default.
    pub fn normal_ceiling(&self) -> u32 {
        normal_ceiling(self.global_per_second, self.high_priority_headroom)
    }

    /// The per-command Redis timeout as a duration.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    /// The wait for the first connection as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// This instance's share of the global limit, used while Redis is unreachable.
    ///
    /// Rounded down so that the fleet as a whole stays under the limit, but never 0:
    /// an instance that may send nothing at all would be a worse outage than a
    /// slight overshoot.
    pub fn instance_share(&self) -> u32 {
        share_of(self.global_per_second, self.instances)
    }
}

/// One instance's share of `limit` among `instances` while Redis is unreachable:
/// rounded down so that the instances together stay within it, but at least 1 unless
/// the limit is 0.
pub(crate) fn share_of(limit: u32, instances: u32) -> u32 {
    if limit == 0 {
        0
    } else {
        (limit / instances.max(1)).max(1)
    }
}

/// What a Redis-backed limiter does when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisErrorPolicy {
    /// Keep sending, limited by an in-process limiter at this instance's share of the
    /// global limit (and in-process per-recipient windows). The default: an outage of
    /// the limiter should not become an outage of SMS delivery.
    #[default]
    FailOpen,
    /// Treat every global request as limited (so the gateway queues it), and report
    /// per-recipient checks as unavailable.
    FailClosed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_shares_each_limit_rounded_down_but_never_to_zero() {
        assert_eq!(share_of(100, 4), 25);
        assert_eq!(share_of(10, 3), 3);
        assert_eq!(share_of(2, 4), 1);
        assert_eq!(share_of(0, 4), 0);
        assert_eq!(share_of(7, 0), 7);
    }

    #[test]
    fn empty_table_gives_the_documented_defaults() {
        let config: LimitConfig = toml::from_str("").unwrap();
        assert_eq!(config, LimitConfig::default());
        assert_eq!(config.global_per_second, 3000);
        assert_eq!(config.global_window(), Duration::from_secs(1));
        assert_eq!(config.high_priority_headroom, 0.1);
        assert_eq!(config.normal_ceiling(), 2700);
        assert_eq!(
            config.recipient_windows,
            vec![
                RecipientWindow::per_seconds(1, 60),
                RecipientWindow::per_seconds(5, 3_600),
                RecipientWindow::per_seconds(10, 86_400)
            ]
        );
        assert_eq!(config.on_redis_error, RedisErrorPolicy::FailOpen);
        assert_eq!(config.key_prefix, "sms:");
        assert_eq!(config.command_timeout(), Duration::from_millis(200));
        assert_eq!(config.instances, 1);
        config.validate().unwrap();
    }

    #[test]
    fn reads_every_field_from_toml() {
        let config: LimitConfig = toml::from_str(
            r#"
            global_per_second = 100
            global_window_ms = 500
            high_priority_headroom = 0.25
            recipient_windows = [{ limit = 2, window_s = 30 }]
            on_redis_error = "fail_closed"
            key_prefix = "test:"
            command_timeout_ms = 50
            connect_timeout_ms = 10
            instances = 4
            "#,
        )
        .unwrap();
        assert_eq!(config.global_per_second, 100);
        assert_eq!(config.global_window_ms, 500);
        assert_eq!(config.high_priority_headroom, 0.25);
        assert_eq!(config.normal_ceiling(), 75);
        assert_eq!(
            config.recipient_windows,
            vec![RecipientWindow::per_seconds(2, 30)]
        );
        assert_eq!(config.on_redis_error, RedisErrorPolicy::FailClosed);
        assert_eq!(config.key_prefix, "test:");
        assert_eq!(config.instance_share(), 25);
        let back: LimitConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn rejects_unknown_fields_and_policies() {
        assert!(toml::from_str::<LimitConfig>("global_per_secnd = 1").is_err());
        assert!(toml::from_str::<LimitConfig>("on_redis_error = \"maybe\"").is_err());
    }

    #[test]
    fn zero_limits_and_windows_are_rejected_naming_the_field() {
        let cases: Vec<(LimitConfig, &str)> = vec![
            (
                LimitConfig {
                    global_per_second: 0,
                    ..LimitConfig::default()
                },
                "global_per_second",
            ),
            (
                LimitConfig {
                    global_window_ms: 0,
                    ..LimitConfig::default()
                },
                "global_window_ms",
            ),
            (
                LimitConfig {
                    recipient_windows: vec![
                        RecipientWindow::per_seconds(1, 60),
                        RecipientWindow::per_seconds(0, 60),
                    ],
                    ..LimitConfig::default()
                },
                "recipient_windows[1].limit",
            ),
            (
                LimitConfig {
                    recipient_windows: vec![RecipientWindow::per_seconds(1, 0)],
                    ..LimitConfig::default()
                },
                "recipient_windows[0].window_s",
            ),
            (
                LimitConfig {
                    high_priority_headroom: 1.0,
                    ..LimitConfig::default()
                },
                "high_priority_headroom",
            ),
            (
                LimitConfig {
                    high_priority_headroom: -0.1,
                    ..LimitConfig::default()
                },
                "high_priority_headroom",
            ),
            (
                LimitConfig {
                    instances: 0,
                    ..LimitConfig::default()
                },
                "instances",
            ),
            (
                LimitConfig {
                    key_prefix: String::new(),
                    ..LimitConfig::default()
                },
                "key_prefix",
            ),
        ];
        for (config, field) in cases {
            let error = config.validate().unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn instance_share_rounds_down_but_never_to_zero() {
        let mut config = LimitConfig {
            instances: 7,
            ..LimitConfig::default()
        };
        assert_eq!(config.instance_share(), 428);
        config.global_per_second = 3;
        assert_eq!(config.instance_share(), 1);
    }
}
