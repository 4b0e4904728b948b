//! Per-recipient limits in Redis: one sliding-window log per recipient, every window of
//! every recipient of a request decided in one script.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use fred::prelude::{Client, Value};
use sms_core::{LimitError, PhoneNumber, RecipientDecision, RecipientLimiter};

use super::{Health, LimiterStats, connect_client, from_micros, malformed, micros, refuse_cluster};
use crate::config::{LimitConfig, RecipientWindow, RedisErrorPolicy};
use crate::error::Error;
use crate::in_process::InProcessRecipientLimiter;
use crate::script::ScriptRunner;
use crate::window::validate_windows;

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
