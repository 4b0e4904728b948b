//! The global limit in Redis: one sliding-window log for both lanes, shared by every
//! instance using the same key prefix.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{Client, Value};
use sms_core::{LimitError, Priority, RateDecision, RateLimiter};

use super::{Health, LimiterStats, connect_client, from_micros, malformed, micros, refuse_cluster};
use crate::config::{LimitConfig, RedisErrorPolicy};
use crate::error::Error;
use crate::in_process::InProcessLimiter;
use crate::lane::cap_for;
use crate::script::ScriptRunner;

/// Sliding-window log for the global limit, both lanes.
///
/// KEYS[1]: the log (sorted set); KEYS[2]: its member sequence.
/// ARGV: limit, window in µs, permits, the request's cap in its lane
/// (`crate::lane::cap_for`: the limit for the high lane; for the normal lane its
/// ceiling, or the permits of a request larger than the ceiling, which then fits an
/// empty window only).
/// Returns `{1, 0}` when allowed, `{0, retry_after_µs}` when limited.
///
/// A request fits when the log plus its permits stays within its cap.
const GLOBAL_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local permits = tonumber(ARGV[3])
if permits > limit then
  return {0, window}
end
local cap = tonumber(ARGV[4])
-- Scores are ~1.7e15: format them as integers, Lua's default would round them.
local function int(x) return string.format('%.0f', x) end
-- An entry exactly one window old has left the window.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now - window))
local count = redis.call('ZCARD', KEYS[1])
if count + permits <= cap then
  local last = redis.call('INCRBY', KEYS[2], permits)
  for i = permits - 1, 0, -1 do
    redis.call('ZADD', KEYS[1], int(now), int(now) .. '-' .. int(last - i))
  end
  local ttl = math.ceil(window / 1000) + 1000
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  return {1, 0}
end
-- The request fits once the (count + permits - cap)-th oldest entry has left.
local index = count + permits - cap - 1
local oldest = redis.call('ZRANGE', KEYS[1], index, index, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now}
";

/// The global limit, shared through Redis by every instance using the same key prefix.
#[derive(Debug)]
pub struct RedisLimiter {
    runner: ScriptRunner,
    keys: Vec<String>,
    limit: u32,
    /// The most permits normal-priority requests may hold in the window.
    normal_ceiling: u32,
    window: Duration,
    policy: RedisErrorPolicy,
    fallback: InProcessLimiter,
    health: Health,
}

impl RedisLimiter {
    /// Connects to `url` (see [`connect_client`]) and limits to
    /// `config.global_per_second` per `config.global_window_ms`, normal-priority
    /// requests to [`LimitConfig::normal_ceiling`] of them.
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
            normal_ceiling: config.normal_ceiling(),
            window,
            policy: config.on_redis_error,
            // The fallback keeps the same share of its smaller window for the high lane.
            fallback: InProcessLimiter::new(config.instance_share(), window)?
                .with_high_priority_headroom(config.high_priority_headroom)?,
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

    /// The most permits normal-priority requests may hold in one window.
    pub fn normal_ceiling(&self) -> u32 {
        self.normal_ceiling
    }

    /// The Redis keys this limiter writes.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Takes `permits` in `priority`'s lane if the log plus them stays within the
    /// lane's cap for them (see `crate::lane`).
    async fn acquire_within(
        &self,
        permits: u32,
        priority: Priority,
    ) -> Result<RateDecision, LimitError> {
        if permits == 0 {
            return Ok(RateDecision::Allowed);
        }
        let cap = cap_for(self.limit, self.normal_ceiling, permits, priority);
        let args = vec![
            Value::from(i64::from(self.limit)),
            Value::from(micros(self.window)),
            Value::from(i64::from(permits)),
            Value::from(i64::from(cap)),
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
                    RedisErrorPolicy::FailOpen => self.fallback.try_acquire_lane(permits, priority),
                    RedisErrorPolicy::FailClosed => RateDecision::Limited {
                        retry_after: self.window,
                    },
                })
            }
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    /// The high lane: the whole window.
    async fn acquire(&self, permits: u32) -> Result<RateDecision, LimitError> {
        self.acquire_within(permits, Priority::High).await
    }

    async fn acquire_lane(
        &self,
        permits: u32,
        priority: Priority,
    ) -> Result<RateDecision, LimitError> {
        self.acquire_within(permits, priority).await
    }

    fn capacity(&self) -> Option<u32> {
        Some(self.limit)
    }

    fn window(&self) -> Option<Duration> {
        Some(self.window)
    }
}
