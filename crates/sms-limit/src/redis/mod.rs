//! Redis limiters: sliding-window logs and counts shared by every gateway instance.
//!
//! Each decision is one Lua script run atomically on the server, so concurrent
//! requests from many instances cannot both see room for the last permit. The
//! scripts read the server's clock (`TIME`), never the caller's: instances whose
//! clocks disagree still share one window, and one UTC day.
//!
//! Every permit of a sliding window is a sorted-set member scored by the server time
//! in microseconds and named `<micros>-<sequence>` with a per-key `INCRBY` sequence,
//! so members are unique: permits taken in the same millisecond, or the same
//! microsecond, must not collapse into one member, or a 1 s window could hold at most
//! one entry per millisecond and a limit of 3000/s would never be reached nor enforced.
//!
//! # Keys
//!
//! Under the key prefix `{prefix}` (`config.key_prefix`); every key expires on its own
//! once nothing in it can matter any more.
//!
//! | key | type | holds |
//! |-----|------|-------|
//! | `{prefix}limit:{global}` | sorted set | the global window's permits (both lanes) |
//! | `{prefix}limit:{global}:seq` | string | its member sequence |
//! | `{prefix}limit:rcpt:{E.164 number}` | sorted set | one recipient's messages |
//! | `{prefix}limit:rcpt-seq` | string | the recipients' member sequence |
//! | `{prefix}client:{name}:s` | sorted set | a client's `per_second` window |
//! | `{prefix}client:{name}:s:seq` | string | its member sequence |
//! | `{prefix}client:{name}:d:{YYYYMMDD}` | string | a client's count for that UTC day |
//!
//! Scripts are loaded once with `SCRIPT LOAD` and run with `EVALSHA`; after a Redis
//! restart (`NOSCRIPT`) they are loaded again and the call retried. Every call carries
//! an explicit timeout and fails fast while the connection is down, so an outage costs
//! at most one timeout per request, and [`RedisErrorPolicy`] decides what happens then.
//! The client reconnects by itself; the first successful call clears the degraded state.

mod client;
mod global;
mod recipients;

pub use client::RedisClientLimiter;
pub use global::RedisLimiter;
pub use recipients::RedisRecipientLimiter;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fred::prelude::{Builder, Client, ClientLike, Config, Options, ReconnectPolicy};
use fred::types::InfoKind;
use sms_core::LimitError;

use crate::config::{LimitConfig, RedisErrorPolicy};
use crate::error::Error;

/// Builds a fred client for `url` that reconnects forever, starts connecting, and
/// waits up to `config.connect_timeout_ms` for the first connection.
///
/// Redis being down is not an error here: the limiters start degraded and follow
/// [`RedisErrorPolicy`] until the client connects. A malformed URL fails, and so does
/// Redis Cluster (a `redis-cluster://` URL, or a server reporting cluster mode): see
/// [`Error::RedisCluster`].
pub async fn connect_client(url: &str, config: &LimitConfig) -> Result<Client, Error> {
    // Backoff capped at 5 s: the limiter must pick Redis up again without a restart.
    connect_client_with_backoff(url, config, 5_000, "limiter").await
}

/// [`connect_client`] with the reconnect backoff capped at `max_delay_ms`; `what` names
/// the client's user in logs.
pub(crate) async fn connect_client_with_backoff(
    url: &str,
    config: &LimitConfig,
    max_delay_ms: u32,
    what: &str,
) -> Result<Client, Error> {
    config.validate()?;
    let mut redis_config = Config::from_url(url).map_err(Error::Redis)?;
    if redis_config.server.is_clustered() {
        return Err(Error::RedisCluster {
            servers: servers(&redis_config),
        });
    }
    // With fred's default (`fail_fast`), a failed first connection ends the connection
    // task for good; an instance started during a Redis outage would never use Redis.
    redis_config.fail_fast = false;
    let connect_timeout = config.connect_timeout();
    let client = Builder::from_config(redis_config)
        .with_connection_config(|connection| {
            connection.connection_timeout = connect_timeout;
            connection.internal_command_timeout = connect_timeout;
        })
        // Unlimited attempts (0), from 100 ms doubling up to `max_delay_ms`.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, max_delay_ms, 2))
        .build()
        .map_err(Error::Redis)?;
    // The connection task runs until the client quits; dropping its handle detaches it.
    let _connection_task = client.connect();
    match tokio::time::timeout(connect_timeout, client.wait_for_connect()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "redis {what} could not connect; starting degraded")
        }
        Err(_) => tracing::warn!(
            timeout_ms = config.connect_timeout_ms,
            "redis {what} did not connect in time; starting degraded"
        ),
    }
    if let Err(error) = refuse_cluster(&client, connect_timeout).await {
        // The connection task would otherwise reconnect to the refused server forever.
        let _ = client.quit().await;
        return Err(error);
    }
    Ok(client)
}

/// The servers `config` points at, as `host:port`: never the credentials.
fn servers(config: &Config) -> String {
    let hosts: Vec<String> = config
        .server
        .hosts()
        .iter()
        .map(ToString::to_string)
        .collect();
    hosts.join(", ")
}

/// Whether the text of `INFO cluster` says the server runs in cluster mode.
fn reports_cluster_mode(info: &str) -> bool {
    info.lines().any(|line| line.trim() == "cluster_enabled:1")
}

/// Fails with [`Error::RedisCluster`] when `client` is set up for a cluster, or is
/// connected to a server in cluster mode.
///
/// The recipient script touches one key per recipient, and recipients' keys share no
/// hash tag, so on a cluster it would fail with `CROSSSLOT` on every multi-recipient
/// request: better refused at start than degraded at every request. A client that is
/// not connected (Redis down at start) cannot be asked and is let through; a server
/// that does not answer `INFO` in time is let through too, with a warning.
async fn refuse_cluster(client: &Client, timeout: Duration) -> Result<(), Error> {
    let config = client.client_config();
    let refused = Error::RedisCluster {
        servers: servers(&config),
    };
    if config.server.is_clustered() {
        return Err(refused);
    }
    if !client.is_connected() {
        return Ok(());
    }
    let options = Options {
        timeout: Some(timeout),
        ..Options::default()
    };
    match client
        .with_options(&options)
        .info::<String>(Some(InfoKind::Cluster))
        .await
    {
        Ok(info) if reports_cluster_mode(&info) => Err(refused),
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::warn!(%error, "could not ask redis whether it runs in cluster mode");
            Ok(())
        }
    }
}

/// Counts of decisions, for metrics and tests. Monotonic since construction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Decisions made by Redis that allowed the request (or recipient).
    pub allowed: u64,
    /// Decisions made by Redis that limited the request (or recipient).
    pub limited: u64,
    /// Requests decided while Redis was unreachable (by the fallback or the policy).
    pub fallback: u64,
    /// Failed Redis calls.
    pub redis_errors: u64,
}

/// Degraded flag and counters, one set per Redis limiter.
#[derive(Debug, Default)]
struct Health {
    what: &'static str,
    degraded: AtomicBool,
    allowed: AtomicU64,
    limited: AtomicU64,
    fallback: AtomicU64,
    redis_errors: AtomicU64,
}

impl Health {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            ..Self::default()
        }
    }

    /// Records a failed call; logs only when the state flips, not per request.
    fn failed(&self, error: &fred::error::Error, policy: RedisErrorPolicy) {
        self.redis_errors.fetch_add(1, Ordering::Relaxed);
        self.fallback.fetch_add(1, Ordering::Relaxed);
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                limiter = self.what,
                %error,
                ?policy,
                "redis unreachable; rate limiter degraded"
            );
        }
    }

    fn succeeded(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                limiter = self.what,
                "redis reachable again; rate limiter restored"
            );
        }
    }

    fn stats(&self) -> LimiterStats {
        LimiterStats {
            allowed: self.allowed.load(Ordering::Relaxed),
            limited: self.limited.load(Ordering::Relaxed),
            fallback: self.fallback.load(Ordering::Relaxed),
            redis_errors: self.redis_errors.load(Ordering::Relaxed),
        }
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn from_micros(micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

fn malformed(reply: &[i64]) -> LimitError {
    LimitError::Backend(format!("unexpected limiter script reply {reply:?}").into())
}

#[cfg(test)]
mod tests {
    use fred::prelude::ErrorKind;

    use super::*;

    #[test]
    fn health_flips_once_each_way_and_counts_every_failure() {
        let health = Health::new("test");
        let error = fred::error::Error::new(ErrorKind::IO, "connection refused");
        assert!(!health.degraded.load(Ordering::Acquire));
        health.failed(&error, RedisErrorPolicy::FailOpen);
        health.failed(&error, RedisErrorPolicy::FailOpen);
        assert!(health.degraded.load(Ordering::Acquire));
        assert_eq!(health.stats().redis_errors, 2);
        assert_eq!(health.stats().fallback, 2);
        health.succeeded();
        assert!(!health.degraded.load(Ordering::Acquire));
    }

    #[test]
    fn cluster_mode_is_read_from_info_cluster() {
        assert!(reports_cluster_mode("# Cluster\r\ncluster_enabled:1\r\n"));
        assert!(!reports_cluster_mode("# Cluster\r\ncluster_enabled:0\r\n"));
        assert!(!reports_cluster_mode(""));
    }

    #[test]
    fn servers_are_named_without_credentials() {
        let config = Config::from_url("redis://user:secret@cache.internal:6380/2").unwrap();
        assert_eq!(servers(&config), "cache.internal:6380");
    }

    #[test]
    fn durations_convert_to_script_micros_and_back() {
        assert_eq!(micros(Duration::from_millis(1500)), 1_500_000);
        assert_eq!(from_micros(250), Duration::from_micros(250));
        // A negative retry (clock skew inside Redis) must not panic or wrap.
        assert_eq!(from_micros(-5), Duration::ZERO);
    }
}
