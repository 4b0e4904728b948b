//! Redis limiters: one sliding-window log shared by every gateway instance.
//!
//! Each decision is one Lua script run atomically on the server, so concurrent
//! requests from many instances cannot both see room for the last permit. The
//! scripts read the server's clock (`TIME`), never the caller's: instances whose
//! clocks disagree still share one window.
//!
//! Every permit is a sorted-set member scored by the server time in microseconds and
//! named `<micros>-<sequence>` with a per-key `INCRBY` sequence, so members are
//! unique: permits taken in the same millisecond, or the same microsecond, must not
//! collapse into one member, or a 1 s window could hold at most one entry per
//! millisecond and a limit of 3000/s would never be reached nor enforced.
//!
//! Scripts are loaded once with `SCRIPT LOAD` and run with `EVALSHA`; after a Redis
//! restart (`NOSCRIPT`) they are loaded again and the call retried. Every call carries
//! an explicit timeout and fails fast while the connection is down, so an outage costs
//! at most one timeout per request, and [`RedisErrorPolicy`] decides what happens then.
//! The client reconnects by itself; the first successful call clears the degraded state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{Builder, Client, ClientLike, Config, Options, ReconnectPolicy, Value};
use fred::types::InfoKind;
use sms_core::{
    LimitError, PhoneNumber, RateDecision, RateLimiter, RecipientDecision, RecipientLimiter,
};

use crate::config::{LimitConfig, RecipientWindow, RedisErrorPolicy};
use crate::error::Error;
use crate::in_process::{InProcessLimiter, InProcessRecipientLimiter};
use crate::script::ScriptRunner;
use crate::window::validate_windows;

/// Sliding-window log for the global limit.
///
/// KEYS[1]: the log (sorted set); KEYS[2]: its member sequence.
/// ARGV: limit, window in µs, permits.
/// Returns `{1, 0}` when allowed, `{0, retry_after_µs}` when limited.
const GLOBAL_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local permits = tonumber(ARGV[3])
-- Scores are ~1.7e15: format them as integers, Lua's default would round them.
local function int(x) return string.format('%.0f', x) end
-- An entry exactly one window old has left the window.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now - window))
local count = redis.call('ZCARD', KEYS[1])
if count + permits <= limit then
  local last = redis.call('INCRBY', KEYS[2], permits)
  for i = permits - 1, 0, -1 do
    redis.call('ZADD', KEYS[1], int(now), int(now) .. '-' .. int(last - i))
  end
  local ttl = math.ceil(window / 1000) + 1000
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  return {1, 0}
end
if permits > limit then
  return {0, window}
end
-- The request fits once the (count + permits - limit)-th oldest entry has left.
local index = count + permits - limit - 1
local oldest = redis.call('ZRANGE', KEYS[1], index, index, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now}
";

/// Several sliding windows per recipient, all recipients of a request in one call.
///
/// KEYS[1..n]: one log per recipient; KEYS[n+1]: the member sequence.
/// ARGV: number of windows, then `limit, window_µs` per window.
/// Returns two numbers per recipient: `0, 0` when allowed (and counted), or the
/// 1-based index of the full window and the retry-after in µs.
const RECIPIENT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function int(x) return string.format('%.0f', x) end
local windows = tonumber(ARGV[1])
local longest = 0
for w = 1, windows do
  local length = tonumber(ARGV[2 * w + 1])
  if length > longest then longest = length end
end
local sequence = KEYS[#KEYS]
local out = {}
for r = 1, #KEYS - 1 do
  local key = KEYS[r]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now - longest))
  -- Check every window before counting, so a limited recipient is counted in none.
  local full, full_retry = 0, -1
  for w = 1, windows do
    local limit = tonumber(ARGV[2 * w])
    local length = tonumber(ARGV[2 * w + 1])
    local since = '(' .. int(now - length)
    local count = redis.call('ZCOUNT', key, since, '+inf')
    if count >= limit then
      local entry = redis.call('ZRANGEBYSCORE', key, since, '+inf', 'WITHSCORES', 'LIMIT', count - limit, 1)
      local retry = tonumber(entry[2]) + length - now
      -- Name the full window that frees last: that is when the recipient may receive.
      if retry > full_retry then full, full_retry = w, retry end
    end
  end
  if full == 0 then
    local n = redis.call('INCR', sequence)
    redis.call('ZADD', key, int(now), int(now) .. '-' .. int(n))
    redis.call('PEXPIRE', key, math.ceil(longest / 1000) + 1000)
    out[#out + 1] = 0
    out[#out + 1] = 0
  else
    out[#out + 1] = full
    out[#out + 1] = full_retry
  end
end
redis.call('PEXPIRE', sequence, math.ceil(longest / 1000) + 1000)
return out
";

/// Gives back one message per recipient: removes the newest entry of its log.
///
/// KEYS: one log per recipient, a recipient listed twice listed twice.
/// Returns `{removed}`, the number of entries removed (an empty or missing log gives
/// nothing back). The newest entry may be a later message than the one refused, when
/// another request for the same recipient came in between; the count is what matters,
/// and the entry kept is the older one, so the recipient frees a little earlier at most.
/// Redis deletes a sorted set once its last member is popped.
const GIVE_BACK_SCRIPT: &str = r"
local removed = 0
for r = 1, #KEYS do
  if #redis.call('ZPOPMAX', KEYS[r]) > 0 then removed = removed + 1 end
end
return {removed}
";

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

/// Degraded flag and counters shared by the two Redis limiters' code paths.
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

/// The global limit, shared through Redis by every instance using the same key prefix.
#[derive(Debug)]
pub struct RedisLimiter {
    runner: ScriptRunner,
    keys: Vec<String>,
    limit: u32,
    window: Duration,
    policy: RedisErrorPolicy,
    fallback: InProcessLimiter,
    health: Health,
}

impl RedisLimiter {
    /// Connects to `url` (see [`connect_client`]) and limits to
    /// `config.global_per_second` per `config.global_window_ms`.
    pub async fn connect(url: &str, config: &LimitConfig) -> Result<Self, Error> {
        let client = connect_client(url, config).await?;
        Self::from_client(client, config).await
    }

    /// Uses an existing client (shared with other users of the same Redis).
    ///
    /// Fails with [`Error::RedisCluster`] when the client is connected to Redis
    /// Cluster.
    pub async fn from_client(client: Client, config: &LimitConfig) -> Result<Self, Error> {
        config.validate()?;
        refuse_cluster(&client, config.connect_timeout()).await?;
        let window = config.global_window();
        let global = format!("{}limit:{{global}}", config.key_prefix);
        Ok(Self {
            runner: ScriptRunner::new(client, GLOBAL_SCRIPT, config.command_timeout()).await,
            keys: vec![global.clone(), format!("{global}:seq")],
            limit: config.global_per_second,
            window,
            policy: config.on_redis_error,
            fallback: InProcessLimiter::new(config.instance_share(), window)?,
            health: Health::new("global"),
        })
    }

    /// Whether the last call to Redis failed (decisions come from the policy).
    pub fn degraded(&self) -> bool {
        self.health.degraded.load(Ordering::Acquire)
    }

    /// Decision counts since construction.
    pub fn stats(&self) -> LimiterStats {
        self.health.stats()
    }

    /// The in-process limiter used while Redis is unreachable under `FailOpen`.
    pub fn fallback(&self) -> &InProcessLimiter {
        &self.fallback
    }

    /// The Redis keys this limiter writes.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn acquire(&self, permits: u32) -> Result<RateDecision, LimitError> {
        if permits == 0 {
            return Ok(RateDecision::Allowed);
        }
        let args = vec![
            Value::from(i64::from(self.limit)),
            Value::from(micros(self.window)),
            Value::from(i64::from(permits)),
        ];
        match self.runner.run::<Vec<i64>>(self.keys.clone(), args).await {
            Ok(reply) => {
                self.health.succeeded();
                match reply.as_slice() {
                    [1, _] => {
                        self.health.allowed.fetch_add(1, Ordering::Relaxed);
                        Ok(RateDecision::Allowed)
                    }
                    [0, retry] => {
                        self.health.limited.fetch_add(1, Ordering::Relaxed);
                        Ok(RateDecision::Limited {
                            retry_after: from_micros(*retry),
                        })
                    }
                    _ => Err(malformed(&reply)),
                }
            }
            Err(error) => {
                self.health.failed(&error, self.policy);
                Ok(match self.policy {
                    RedisErrorPolicy::FailOpen => self.fallback.try_acquire(permits),
                    RedisErrorPolicy::FailClosed => RateDecision::Limited {
                        retry_after: self.window,
                    },
                })
            }
        }
    }

    fn capacity(&self) -> Option<u32> {
        Some(self.limit)
    }

    fn window(&self) -> Option<Duration> {
        Some(self.window)
    }
}

/// Per-recipient limits shared through Redis; all recipients of a request in one call.
#[derive(Debug)]
pub struct RedisRecipientLimiter {
    runner: ScriptRunner,
    give_back_runner: ScriptRunner,
    key_prefix: String,
    sequence_key: String,
    windows: Vec<RecipientWindow>,
    args: Vec<Value>,
    policy: RedisErrorPolicy,
    fallback: InProcessRecipientLimiter,
    health: Health,
}

impl RedisRecipientLimiter {
    /// Connects to `url` (see [`connect_client`]) and enforces `config.recipient_windows`.
    pub async fn connect(url: &str, config: &LimitConfig) -> Result<Self, Error> {
        let client = connect_client(url, config).await?;
        Self::from_client(client, config).await
    }

    /// Uses an existing client (for example the one the global limiter uses).
    ///
    /// Fails with [`Error::RedisCluster`] when the client is connected to Redis
    /// Cluster.
    pub async fn from_client(client: Client, config: &LimitConfig) -> Result<Self, Error> {
        config.validate()?;
        refuse_cluster(&client, config.connect_timeout()).await?;
        validate_windows(&config.recipient_windows)?;
        let windows = config.recipient_windows.clone();
        let mut args = vec![Value::from(windows.len() as i64)];
        for window in &windows {
            args.push(Value::from(i64::from(window.limit)));
            args.push(Value::from(micros(window.window)));
        }
        Ok(Self {
            runner: ScriptRunner::new(client.clone(), RECIPIENT_SCRIPT, config.command_timeout())
                .await,
            give_back_runner: ScriptRunner::new(client, GIVE_BACK_SCRIPT, config.command_timeout())
                .await,
            key_prefix: format!("{}limit:rcpt:", config.key_prefix),
            sequence_key: format!("{}limit:rcpt-seq", config.key_prefix),
            fallback: InProcessRecipientLimiter::new(windows.clone())?,
            windows,
            args,
            policy: config.on_redis_error,
            health: Health::new("recipient"),
        })
    }

    /// Whether the last call to Redis failed.
    pub fn degraded(&self) -> bool {
        self.health.degraded.load(Ordering::Acquire)
    }

    /// Decision counts (one per recipient) since construction.
    pub fn stats(&self) -> LimiterStats {
        self.health.stats()
    }

    /// The Redis key holding `recipient`'s log: the E.164 number under the prefix.
    pub fn key_for(&self, recipient: &PhoneNumber) -> String {
        format!("{}{}", self.key_prefix, recipient.as_str())
    }
}

#[async_trait]
impl RecipientLimiter for RedisRecipientLimiter {
    async fn check(
        &self,
        recipients: &[PhoneNumber],
    ) -> Result<Vec<RecipientDecision>, LimitError> {
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys: Vec<String> = recipients.iter().map(|r| self.key_for(r)).collect();
        keys.push(self.sequence_key.clone());
        let reply: Vec<i64> = match self.runner.run(keys, self.args.clone()).await {
            Ok(reply) => reply,
            Err(error) => {
                self.health.failed(&error, self.policy);
                return match self.policy {
                    RedisErrorPolicy::FailOpen => Ok(self.fallback.check_now(recipients)),
                    // A limited answer would tell the user they were sent too many
                    // messages, which is not known: report the outage instead.
                    RedisErrorPolicy::FailClosed => Err(LimitError::Unavailable(Box::new(error))),
                };
            }
        };
        self.health.succeeded();
        if reply.len() != recipients.len() * 2 {
            return Err(malformed(&reply));
        }
        reply
            .chunks_exact(2)
            .map(|pair| match *pair {
                [0, _] => {
                    self.health.allowed.fetch_add(1, Ordering::Relaxed);
                    Ok(RecipientDecision::Allowed)
                }
                [index, retry] => {
                    let window = usize::try_from(index - 1)
                        .ok()
                        .and_then(|i| self.windows.get(i))
                        .ok_or_else(|| malformed(&reply))?;
                    self.health.limited.fetch_add(1, Ordering::Relaxed);
                    Ok(RecipientDecision::Limited {
                        window: window.window,
                        limit: window.limit,
                        retry_after: from_micros(retry),
                    })
                }
                _ => Err(malformed(&reply)),
            })
            .collect()
    }

    async fn give_back(&self, recipients: &[PhoneNumber]) -> Result<(), LimitError> {
        if recipients.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = recipients.iter().map(|r| self.key_for(r)).collect();
        match self
            .give_back_runner
            .run::<Vec<i64>>(keys, Vec::new())
            .await
        {
            Ok(reply) => {
                self.health.succeeded();
                match reply[..] {
                    [_removed] => Ok(()),
                    _ => Err(malformed(&reply)),
                }
            }
            Err(error) => {
                self.health.failed(&error, self.policy);
                match self.policy {
                    // While Redis is unreachable the fallback is what counted the
                    // refused request, so it is the one to give back to.
                    RedisErrorPolicy::FailOpen => {
                        self.fallback.give_back_now(recipients);
                        Ok(())
                    }
                    RedisErrorPolicy::FailClosed => Err(LimitError::Unavailable(Box::new(error))),
                }
            }
        }
    }
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
