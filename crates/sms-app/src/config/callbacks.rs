//! `[callbacks]`: how status events are signed, where they go by default, and how long
//! a failing client endpoint is retried.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use sms_core::CallbackUrl;

use super::Secret;

/// The environment variable holding the signing secret.
pub const ENV_CALLBACK_SECRET: &str = "SMS_CALLBACK_SECRET";

/// Shortest signing secret accepted.
const MIN_SECRET_CHARS: usize = 32;
/// Shortest retry horizon: a client endpoint down overnight keeps its events.
const MIN_RETRY_FOR_S: u64 = 24 * 3600;

/// `[callbacks]`. Callbacks are on when `secret` is set: every event is signed with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbacksConfig {
    /// The HMAC-SHA256 key events are signed with (`SMS_CALLBACK_SECRET`), shared with
    /// the clients that verify them. Absent: no events, and a request naming a
    /// `callback_url` is refused.
    pub secret: Option<Secret>,
    /// Where the events of messages without a `callback_url` of their own go; absent:
    /// such messages make none.
    pub default_url: Option<String>,
    /// How long one post may take, in milliseconds.
    pub timeout_ms: u64,
    /// The delay before the first retry of a failed post, in milliseconds; it doubles
    /// (with jitter) up to `max_retry_ms`.
    pub first_retry_ms: u64,
    /// The longest delay between retries, in milliseconds.
    pub max_retry_ms: u64,
    /// How long after an event was made its posts are retried, in seconds (at least a
    /// day); then it is kept as failed.
    pub retry_for_s: u64,
    /// Most posts of one event, retries included.
    pub max_attempts: u32,
    /// Posts in flight at once, across endpoints.
    pub concurrency: u32,
    /// Whether callback URLs may name loopback, private or link-local hosts (the
    /// gateway's own network); off, such URLs are refused and host names are posted
    /// to only at their public addresses.
    pub allow_private_hosts: bool,
}

impl Default for CallbacksConfig {
    fn default() -> Self {
        Self {
            secret: None,
            default_url: None,
            timeout_ms: 5_000,
            first_retry_ms: 5_000,
            max_retry_ms: 3_600_000,
            retry_for_s: MIN_RETRY_FOR_S,
            // 5 s doubling to an hour reaches a day after about 33 posts.
            max_attempts: 100,
            concurrency: 32,
            allow_private_hosts: false,
        }
    }
}

impl CallbacksConfig {
    /// Whether status events are made and posted.
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// The default endpoint, checked.
    pub fn default_url(&self) -> Result<Option<CallbackUrl>> {
        self.default_url
            .as_deref()
            .map(|url| {
                CallbackUrl::new(url)
                    .map_err(|e| anyhow::anyhow!("callbacks.default_url: {}", e.problem))
            })
            .transpose()
    }

    /// Checks every key; each error names its key.
    pub fn validate(&self) -> Result<()> {
        if let Some(secret) = &self.secret {
            let length = secret.expose().chars().count();
            if length < MIN_SECRET_CHARS {
                bail!(
                    "callbacks.secret ({ENV_CALLBACK_SECRET}): expected at least \
                     {MIN_SECRET_CHARS} characters, found {length}; clients trust an event \
                     because only the gateway knows this key"
                );
            }
        } else if self.default_url.is_some() {
            bail!(
                "callbacks.default_url: set callbacks.secret ({ENV_CALLBACK_SECRET}) too; \
                 events are only sent signed"
            );
        }
        if let Some(url) = self.default_url()?
            && !self.allow_private_hosts
            && let Some(refusal) = crate::callback_guard::refusal(&url)
        {
            bail!("callbacks.default_url: {refusal}");
        }
        for (key, value) in [
            ("timeout_ms", self.timeout_ms),
            ("first_retry_ms", self.first_retry_ms),
            ("max_attempts", u64::from(self.max_attempts)),
            ("concurrency", u64::from(self.concurrency)),
        ] {
            if value == 0 {
                bail!("callbacks.{key}: expected at least 1, found 0");
            }
        }
        if self.max_retry_ms < self.first_retry_ms {
            bail!(
                "callbacks.max_retry_ms: expected at least first_retry_ms ({}), found {}",
                self.first_retry_ms,
                self.max_retry_ms
            );
        }
        if self.retry_for_s < MIN_RETRY_FOR_S {
            bail!(
                "callbacks.retry_for_s: expected at least {MIN_RETRY_FOR_S} (a day), found {}; \
                 a client endpoint that is down overnight must not lose its events",
                self.retry_for_s
            );
        }
        Ok(())
    }
}
