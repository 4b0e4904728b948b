//! The gateway's configuration: a TOML file, every key defaulted, plus environment overrides.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Environment variables that override the file.
pub const ENV_DATABASE_URL: &str = "SMS_DATABASE_URL";
/// Redis URL; absent means in-process limiters.
pub const ENV_REDIS_URL: &str = "SMS_REDIS_URL";
/// Listen address.
pub const ENV_LISTEN: &str = "SMS_LISTEN";
/// Comma-separated bearer tokens.
pub const ENV_API_TOKENS: &str = "SMS_API_TOKENS";

/// A value that is never printed: `Debug`, `Display` and serialisation show `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where `serve` listens (`SMS_LISTEN`).
    pub listen: String,
    /// PostgreSQL URL (`SMS_DATABASE_URL`); absent means embedded SQLite.
    pub database_url: Option<Secret>,
    /// SQLite file when no database URL is set.
    pub sqlite_path: PathBuf,
    /// Redis URL (`SMS_REDIS_URL`); absent means in-process limiters.
    pub redis_url: Option<Secret>,
    /// Bearer tokens accepted by the API (`SMS_API_TOKENS`, comma-separated).
    pub api_tokens: Vec<Secret>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Where simulated vendors append their deliveries (JSON lines); absent keeps them in memory.
    pub simulation_log: Option<PathBuf>,
    /// Failover and health.
    pub failover: FailoverSection,
    /// Rate limits.
    pub limit: LimitSection,
    /// The deferred queue.
    pub queue: QueueSection,
    /// PostgreSQL pool.
    pub postgres: PostgresSection,
    /// Vendors by name, tried cheapest first; ties go to the earlier `order`.
    pub vendors: BTreeMap<String, VendorSection>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            database_url: None,
            sqlite_path: PathBuf::from("./data/sms-gateway.db"),
            redis_url: None,
            api_tokens: Vec::new(),
            max_body_bytes: 256 * 1024,
            simulation_log: None,
            failover: FailoverSection::default(),
            limit: LimitSection::default(),
            queue: QueueSection::default(),
            postgres: PostgresSection::default(),
            vendors: default_vendors(),
        }
    }
}

/// `[failover]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverSection {
    /// Consecutive failures of the current vendor that make the gateway switch.
    pub consecutive_failures: u32,
    /// A delivered send slower than this counts as a failure of its vendor.
    pub slow_threshold_ms: u64,
    /// How long one attempt may take before it counts as timed out.
    pub attempt_timeout_ms: u64,
    /// How long a vendor that was switched away from rests before it is probed.
    pub cooldown_s: u64,
    /// What a timeout does: `requeue` (at-least-once; may duplicate) or `fail`.
    pub on_timeout: OnTimeout,
    /// UTC offset of the billing calendar, in hours (vendors in China bill in UTC+8).
    pub billing_utc_offset_hours: i32,
}

impl Default for FailoverSection {
    fn default() -> Self {
        Self {
            consecutive_failures: 2,
            slow_threshold_ms: 1000,
            attempt_timeout_ms: 5000,
            cooldown_s: 30,
            on_timeout: OnTimeout::Requeue,
            billing_utc_offset_hours: 8,
        }
    }
}

/// The timeout policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// Queue the message again; the recipient may get it twice.
    Requeue,
    /// Tell the caller it failed; the recipient may still get it.
    Fail,
}

/// `[limit]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSection {
    /// Messages per second across every instance.
    pub global_per_second: u32,
    /// Per-recipient windows; every one applies.
    pub recipient_windows: Vec<RecipientWindowSection>,
    /// What to do when Redis cannot be reached: `fail_open` (in-process share) or `fail_closed` (queue everything).
    pub on_redis_error: OnRedisError,
    /// How many instances share the global limit (for the in-process share on Redis errors).
    pub instances: u32,
    /// Prefix of every Redis key.
    pub key_prefix: String,
}

impl Default for LimitSection {
    fn default() -> Self {
        Self {
            global_per_second: 3000,
            recipient_windows: vec![
                RecipientWindowSection {
                    limit: 1,
                    window_s: 60,
                },
                RecipientWindowSection {
                    limit: 10,
                    window_s: 86_400,
                },
            ],
            on_redis_error: OnRedisError::FailOpen,
            instances: 1,
            key_prefix: "sms:".into(),
        }
    }
}

/// One per-recipient window.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientWindowSection {
    /// Messages allowed per recipient in the window.
    pub limit: u32,
    /// The window, in seconds.
    pub window_s: u64,
}

/// The Redis error policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Fall back to an in-process limiter at this instance's share.
    FailOpen,
    /// Treat every request as limited (so it is queued).
    FailClosed,
}

/// `[queue]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSection {
    /// Attempts before a message is dead.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, with full jitter.
    pub backoff_base_ms: u64,
    /// Longest retry delay.
    pub backoff_max_s: u64,
    /// How long a claim holds a message.
    pub lease_s: u64,
    /// Messages claimed per batch.
    pub drain_batch: u32,
    /// The periodic drain tick.
    pub drain_interval_ms: u64,
    /// How long sent messages are kept for status look-ups.
    pub retention_h: u64,
}

impl Default for QueueSection {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            backoff_base_ms: 1000,
            backoff_max_s: 300,
            lease_s: 30,
            drain_batch: 100,
            drain_interval_ms: 1000,
            retention_h: 72,
        }
    }
}

/// `[postgres]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSection {
    /// Connections in the pool.
    pub pool_size: usize,
    /// Schema holding the gateway's tables.
    pub schema: String,
}

impl Default for PostgresSection {
    fn default() -> Self {
        Self {
            pool_size: 16,
            schema: "public".into(),
        }
    }
}

/// `[vendors.<name>]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VendorSection {
    /// `simulated`, or a real adapter: `aliyun`, `tencent`, `cloopen`.
    pub kind: String,
    /// Tie-break order among equally priced vendors (lower first).
    pub order: u32,
    /// Price tiers; absent means the built-in list for the vendor's name.
    pub fees: Option<Vec<toml::Value>>,
    /// Simulation settings for `kind = "simulated"` (latency, error rates, schedule).
    pub simulation: Option<toml::Value>,
    /// Settings of a real adapter (endpoint, credentials, sign name, …).
    pub settings: Option<toml::Value>,
}

impl Default for VendorSection {
    fn default() -> Self {
        Self {
            kind: "simulated".into(),
            order: 0,
            fees: None,
            simulation: None,
            settings: None,
        }
    }
}

fn default_vendors() -> BTreeMap<String, VendorSection> {
    ["aliyun", "tencent", "cloopen"]
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            (
                name.to_owned(),
                VendorSection {
                    order: i as u32,
                    ..VendorSection::default()
                },
            )
        })
        .collect()
}

impl Config {
    /// Reads `path` (or the defaults when `None`), then applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Self::from_toml(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok());
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document; an unknown or mistyped key is an error naming it.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: Config =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        Ok(config)
    }

    /// Applies the `SMS_*` overrides read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(url) = var(ENV_DATABASE_URL).filter(|v| !v.is_empty()) {
            self.database_url = Some(Secret::new(url));
        }
        if let Some(url) = var(ENV_REDIS_URL).filter(|v| !v.is_empty()) {
            self.redis_url = Some(Secret::new(url));
        }
        if let Some(listen) = var(ENV_LISTEN).filter(|v| !v.is_empty()) {
            self.listen = listen;
        }
        if let Some(tokens) = var(ENV_API_TOKENS) {
            self.api_tokens = tokens
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(Secret::new)
                .collect();
        }
    }

    /// Checks values serde cannot; each error names its key.
    pub fn validate(&self) -> Result<()> {
        let f = &self.failover;
        if f.consecutive_failures == 0 {
            bail!("failover.consecutive_failures: expected at least 1, found 0");
        }
        if f.attempt_timeout_ms == 0 {
            bail!("failover.attempt_timeout_ms: expected at least 1, found 0");
        }
        if !(-12..=14).contains(&f.billing_utc_offset_hours) {
            bail!(
                "failover.billing_utc_offset_hours: expected -12 to 14, found {}",
                f.billing_utc_offset_hours
            );
        }
        if self.limit.global_per_second == 0 {
            bail!("limit.global_per_second: expected at least 1, found 0");
        }
        if self.limit.instances == 0 {
            bail!("limit.instances: expected at least 1, found 0");
        }
        for (i, w) in self.limit.recipient_windows.iter().enumerate() {
            if w.limit == 0 || w.window_s == 0 {
                bail!("limit.recipient_windows[{i}]: limit and window_s must both be at least 1");
            }
        }
        let q = &self.queue;
        if q.max_attempts == 0 {
            bail!("queue.max_attempts: expected at least 1, found 0");
        }
        if q.lease_s == 0 {
            bail!("queue.lease_s: expected at least 1, found 0");
        }
        if q.drain_batch == 0 {
            bail!("queue.drain_batch: expected at least 1, found 0");
        }
        if q.backoff_base_ms == 0 || q.backoff_max_s * 1000 < q.backoff_base_ms {
            bail!("queue.backoff_base_ms: expected at least 1 and at most queue.backoff_max_s");
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            bail!(
                "listen: expected an address like 127.0.0.1:8080, found {:?}",
                self.listen
            );
        }
        if self.vendors.is_empty() {
            bail!("vendors: expected at least one vendor");
        }
        for (name, v) in &self.vendors {
            sms_core::VendorId::new(name)
                .map_err(|e| anyhow::anyhow!("vendors.{name}: {}", e.problem))?;
            if !matches!(
                v.kind.as_str(),
                "simulated" | "aliyun" | "tencent" | "cloopen"
            ) {
                bail!(
                    "vendors.{name}.kind: expected simulated, aliyun, tencent or cloopen, found {:?}",
                    v.kind
                );
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets shown as `***`.
    pub fn to_redacted_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let c = Config::default();
        assert_eq!(c.failover.consecutive_failures, 2);
        assert_eq!(c.failover.slow_threshold_ms, 1000);
        assert_eq!(c.limit.global_per_second, 3000);
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert!(c.database_url.is_none() && c.redis_url.is_none());
        assert_eq!(
            c.vendors.keys().collect::<Vec<_>>(),
            ["aliyun", "cloopen", "tencent"]
        );
        c.validate().unwrap();
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        let e = Config::from_toml("[failover]\nconsecutive_failure = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("consecutive_failure"), "{e}");
        let e = Config::from_toml("[failover]\nconsecutive_failures = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("consecutive_failures"), "{e}");
        let c = Config::from_toml("[queue]\nmax_attempts = 0\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("queue.max_attempts")
        );
        let c = Config::from_toml("[vendors.x]\nkind = \"nope\"\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("vendors.x.kind")
        );
    }

    #[test]
    fn environment_overrides_the_file_and_secrets_stay_hidden() {
        let mut c = Config::from_toml("listen = \"127.0.0.1:9000\"\n").unwrap();
        c.apply_env(|name| match name {
            ENV_DATABASE_URL => Some("postgres://u:hunter2@db/sms".into()),
            ENV_API_TOKENS => Some("tok-one, tok-two,".into()),
            ENV_LISTEN => Some("0.0.0.0:8081".into()),
            _ => None,
        });
        assert_eq!(c.listen, "0.0.0.0:8081");
        assert_eq!(c.api_tokens.len(), 2);
        assert_eq!(c.api_tokens[1].expose(), "tok-two");
        let shown = c.to_redacted_toml().unwrap();
        let debug = format!("{c:?}");
        for leak in ["hunter2", "tok-one", "tok-two"] {
            assert!(!shown.contains(leak), "{shown}");
            assert!(!debug.contains(leak), "{debug}");
        }
    }
}
