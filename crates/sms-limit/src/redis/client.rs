//! Per-client limits in Redis: each client's `per_second` and `per_day`, exact across
//! every instance using the same key prefix.
//!
//! One script decides both limits of a request atomically: it checks every limit of
//! the quota, then counts in all of them or in none, so two instances can neither both
//! take a client's last permit nor count a request one limit refused. `per_second` is
//! a sliding-window log like the global one, under `{prefix}client:{name}:s`;
//! `per_day` is a counter for the server's current UTC day under
//! `{prefix}client:{name}:d:{YYYYMMDD}`, which expires an hour after that day ends
//! (the script never reads it again after midnight; the hour keeps yesterday's total
//! readable for a while). The script derives the date from the server's `TIME`, so
//! instances whose clocks disagree still share one day.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use fred::prelude::{Client, Value};
use sms_core::{ClientId, ClientLimiter, ClientQuota, LimitError, QuotaDecision, QuotaWindow};

use super::{Health, LimiterStats, connect_client, from_micros, malformed, micros, refuse_cluster};
use crate::config::{LimitConfig, RedisErrorPolicy, share_of};
use crate::error::Error;
use crate::in_process::{InProcessClientLimiter, SECOND};
use crate::script::ScriptRunner;

/// Lua setting `date` to the UTC date of `seconds` (since the epoch) as `YYYYMMDD`,
/// and `days` to its day number.
///
/// Redis's Lua has no `os.date`, so the date is computed from the day number with
/// Howard Hinnant's `civil_from_days`.
macro_rules! utc_date_lua {
    () => {
        r"
local days = math.floor(seconds / 86400)
local z = days + 719468
local era = math.floor(z / 146097)
local doe = z - era * 146097
local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
  - math.floor(doe / 146096)) / 365)
local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
local mp = math.floor((5 * doy + 2) / 153)
local day = doy - math.floor((153 * mp + 2) / 5) + 1
local month = mp < 10 and mp + 3 or mp - 9
local year = yoe + era * 400 + (month <= 2 and 1 or 0)
local date = string.format('%04d%02d%02d', year, month, day)
"
    };
}

/// The start of both client scripts: the server's time, and today's day key.
///
/// Sets `now` (µs since the epoch), `midnight` (the next UTC midnight, in seconds since
/// the epoch), `int` (formats a number as an integer) and `day_key` (`KEYS[3]`
/// followed by today's UTC date, `YYYYMMDD`).
macro_rules! client_script_prelude {
    () => {
        concat!(
            r"
local t = redis.call('TIME')
local seconds = tonumber(t[1])
local now = seconds * 1000000 + tonumber(t[2])
local function int(x) return string.format('%.0f', x) end
",
            utc_date_lua!(),
            r"
local midnight = (days + 1) * 86400
local day_key = KEYS[3] .. date
"
        )
    };
}

/// Decides and counts one request against a client's limits.
///
/// KEYS[1]: the `per_second` log (sorted set); KEYS[2]: its member sequence;
/// KEYS[3]: the stem of the day keys.
/// ARGV: permits, `per_second` (-1: none), `per_day` (-1: none), window in µs.
/// Returns `{0, 0}` when allowed (and counted in every limit of the quota), `{1,
/// retry_µs}` when `per_second` refuses, `{2, retry_µs}` when `per_day` does; when
/// both refuse, the one that frees last.
const ACQUIRE_SCRIPT: &str = concat!(
    client_script_prelude!(),
    r"
local permits = tonumber(ARGV[1])
local per_second = tonumber(ARGV[2])
local per_day = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
-- Check every limit before counting, so a refused request is counted in none.
local second_retry, day_retry = -1, -1
if per_second >= 0 then
  -- An entry exactly one window old has left the window.
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now - window))
  local count = redis.call('ZCARD', KEYS[1])
  if permits > per_second then
    second_retry = window
  elseif count + permits > per_second then
    -- The request fits once the (count + permits - limit)-th oldest entry has left.
    local index = count + permits - per_second - 1
    local oldest = redis.call('ZRANGE', KEYS[1], index, index, 'WITHSCORES')
    second_retry = tonumber(oldest[2]) + window - now
  end
end
if per_day >= 0 then
  local used = tonumber(redis.call('GET', day_key) or 0)
  if used + permits > per_day then
    day_retry = midnight * 1000000 - now
  end
end
if day_retry >= 0 and day_retry >= second_retry then
  return {2, day_retry}
end
if second_retry >= 0 then
  return {1, second_retry}
end
if per_second >= 0 then
  local last = redis.call('INCRBY', KEYS[2], permits)
  for i = permits - 1, 0, -1 do
    redis.call('ZADD', KEYS[1], int(now), int(now) .. '-' .. int(last - i))
  end
  local ttl = math.ceil(window / 1000) + 1000
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if per_day >= 0 then
  redis.call('INCRBY', day_key, permits)
  redis.call('EXPIREAT', day_key, midnight + 3600)
end
return {0, 0}
"
);

/// Gives back permits of a refused request in a client's limits.
///
/// KEYS: as for [`ACQUIRE_SCRIPT`].
/// ARGV: permits, `1` to give back in `per_second`, `1` to give back in `per_day`.
/// Returns `{from_second, from_day}`, the permits given back in each. The newest
/// entries of the log go, which may belong to a later request than the refused one;
/// the count is what matters. Today's count never goes below zero, and an emptied
/// count is deleted, so a give-back earns no credit for later.
const GIVE_BACK_SCRIPT: &str = concat!(
    client_script_prelude!(),
    r"
local permits = tonumber(ARGV[1])
local from_second, from_day = 0, 0
if ARGV[2] == '1' then
  from_second = #redis.call('ZPOPMAX', KEYS[1], permits) / 2
end
if ARGV[3] == '1' then
  local used = tonumber(redis.call('GET', day_key) or 0)
  if used > permits then
    redis.call('DECRBY', day_key, permits)
    from_day = permits
  elseif used > 0 then
    redis.call('DEL', day_key)
    from_day = used
  end
end
return {from_second, from_day}
"
);

/// A limit as a script argument: -1 for none.
fn limit_arg(limit: Option<u32>) -> Value {
    Value::from(limit.map_or(-1, i64::from))
}

/// Per-client limits shared through Redis; both limits of a request in one call.
///
/// Under `FailOpen`, while Redis is unreachable, an in-process client limiter decides
/// instead, allowing each client this instance's share of each limit (the limit
/// divided by `instances`, as for the global limit); a refusal still names the
/// client's configured limit. Under `FailClosed` every call fails with
/// `LimitError::Unavailable`: a `Limited` answer would tell the client it sent too
/// much, which is not known.
#[derive(Debug)]
pub struct RedisClientLimiter {
    runner: ScriptRunner,
    give_back_runner: ScriptRunner,
    /// `{prefix}client:`.
    key_prefix: String,
    policy: RedisErrorPolicy,
    instances: u32,
    fallback: InProcessClientLimiter,
    health: Health,
}

impl RedisClientLimiter {
    /// Connects to `url` (see [`connect_client`]).
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
        Ok(Self {
            runner: ScriptRunner::new(client.clone(), ACQUIRE_SCRIPT, config.command_timeout())
                .await,
            give_back_runner: ScriptRunner::new(client, GIVE_BACK_SCRIPT, config.command_timeout())
                .await,
            key_prefix: format!("{}client:", config.key_prefix),
            policy: config.on_redis_error,
            instances: config.instances,
            fallback: InProcessClientLimiter::new(),
            health: Health::new("client"),
        })
    }

    /// Whether the last call to Redis failed.
    pub fn degraded(&self) -> bool {
        self.health.degraded.load(Ordering::Acquire)
    }

    /// Decision counts (one per request) since construction.
    pub fn stats(&self) -> LimiterStats {
        self.health.stats()
    }

    /// The in-process limiter used while Redis is unreachable under `FailOpen`.
    pub fn fallback(&self) -> &InProcessClientLimiter {
        &self.fallback
    }

    /// `client`'s keys: its `per_second` log, the log's member sequence, and the stem
    /// its day keys start with (each followed by the UTC date, `YYYYMMDD`).
    pub fn keys_for(&self, client: &ClientId) -> [String; 3] {
        let stem = format!("{}{}", self.key_prefix, client.as_str());
        [
            format!("{stem}:s"),
            format!("{stem}:s:seq"),
            format!("{stem}:d:"),
        ]
    }

    /// This instance's share of each limit of `quota`, for the fallback.
    fn fallback_quota(&self, quota: ClientQuota) -> ClientQuota {
        ClientQuota {
            per_second: quota.per_second.map(|l| share_of(l, self.instances)),
            per_day: quota.per_day.map(|l| share_of(l, self.instances)),
        }
    }

    /// The fallback's decision, naming the client's configured limit when it refuses.
    fn fallback_acquire(
        &self,
        client: &ClientId,
        quota: ClientQuota,
        permits: u32,
    ) -> QuotaDecision {
        match self
            .fallback
            .acquire_now(client, self.fallback_quota(quota), permits)
        {
            QuotaDecision::Allowed => QuotaDecision::Allowed,
            QuotaDecision::Limited {
                window,
                limit,
                retry_after,
            } => {
                let configured = match window {
                    QuotaWindow::Second => quota.per_second,
                    QuotaWindow::Day => quota.per_day,
                };
                QuotaDecision::Limited {
                    window,
                    limit: configured.unwrap_or(limit),
                    retry_after,
                }
            }
        }
    }
}

#[async_trait]
impl ClientLimiter for RedisClientLimiter {
    async fn acquire(
        &self,
        client: &ClientId,
        quota: ClientQuota,
        permits: u32,
    ) -> Result<QuotaDecision, LimitError> {
        if permits == 0 || quota.is_unlimited() {
            return Ok(QuotaDecision::Allowed);
        }
        let args = vec![
            Value::from(i64::from(permits)),
            limit_arg(quota.per_second),
            limit_arg(quota.per_day),
            Value::from(micros(SECOND)),
        ];
        let reply: Vec<i64> = match self.runner.run(self.keys_for(client).to_vec(), args).await {
            Ok(reply) => reply,
            Err(error) => {
                self.health.failed(&error, self.policy);
                return match self.policy {
                    RedisErrorPolicy::FailOpen => Ok(self.fallback_acquire(client, quota, permits)),
                    RedisErrorPolicy::FailClosed => Err(LimitError::Unavailable(Box::new(error))),
                };
            }
        };
        self.health.succeeded();
        let (window, limit) = match reply[..] {
            [0, _] => {
                self.health.allowed.fetch_add(1, Ordering::Relaxed);
                return Ok(QuotaDecision::Allowed);
            }
            [1, _] => (QuotaWindow::Second, quota.per_second),
            [2, _] => (QuotaWindow::Day, quota.per_day),
            _ => return Err(malformed(&reply)),
        };
        // A script refusing a limit the quota does not have would be a bug in it.
        let limit = limit.ok_or_else(|| malformed(&reply))?;
        self.health.limited.fetch_add(1, Ordering::Relaxed);
        Ok(QuotaDecision::Limited {
            window,
            limit,
            retry_after: from_micros(reply[1]),
        })
    }

    async fn give_back(
        &self,
        client: &ClientId,
        quota: ClientQuota,
        permits: u32,
    ) -> Result<(), LimitError> {
        if permits == 0 || quota.is_unlimited() {
            return Ok(());
        }
        let flag = |limit: Option<u32>| Value::from(i64::from(limit.is_some()));
        let args = vec![
            Value::from(i64::from(permits)),
            flag(quota.per_second),
            flag(quota.per_day),
        ];
        match self
            .give_back_runner
            .run::<Vec<i64>>(self.keys_for(client).to_vec(), args)
            .await
        {
            Ok(reply) => {
                self.health.succeeded();
                match reply[..] {
                    [_from_second, _from_day] => Ok(()),
                    _ => Err(malformed(&reply)),
                }
            }
            Err(error) => {
                self.health.failed(&error, self.policy);
                match self.policy {
                    // While Redis is unreachable the fallback is what counted the
                    // refused request, so it is the one to give back to.
                    RedisErrorPolicy::FailOpen => {
                        self.fallback
                            .give_back_now(client, self.fallback_quota(quota), permits);
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
    use chrono::{DateTime, NaiveDate, NaiveTime};
    use fred::prelude::{ClientLike, LuaInterface};

    use super::*;

    #[tokio::test]
    async fn the_scripts_date_is_the_utc_calendar_date() {
        let url = std::env::var("SMS_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let config = LimitConfig {
            connect_timeout_ms: 2_000,
            command_timeout_ms: 10_000,
            ..LimitConfig::default()
        };
        let client = connect_client(&url, &config).await.unwrap();
        if !client.is_connected() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "Redis at {url} is unreachable and CI=true, so Redis tests must run"
            );
            eprintln!("skipping: Redis at {url} is unreachable (set SMS_TEST_REDIS_URL)");
            return;
        }
        // The first and the last second of every day from 1999 to 2101: leap years,
        // century years (2000 is a leap year, 2100 is not) and every month's end.
        let first = NaiveDate::from_ymd_opt(1999, 1, 1).unwrap();
        let mut seconds = Vec::new();
        for day in 0..(103 * 366) {
            let start = (first + chrono::Days::new(day)).and_time(NaiveTime::MIN);
            let start = start.and_utc().timestamp();
            seconds.extend([start, start + 86_399]);
        }
        let script = concat!(
            "local out = {}\n",
            "for i = 1, #ARGV do\n",
            "local seconds = tonumber(ARGV[i])\n",
            utc_date_lua!(),
            "out[i] = date\n",
            "end\n",
            "return out\n"
        );
        let dates: Vec<String> = client
            .eval(script, Vec::<String>::new(), seconds.clone())
            .await
            .unwrap();
        assert_eq!(dates.len(), seconds.len());
        for (second, date) in seconds.iter().zip(&dates) {
            let expected = DateTime::from_timestamp(*second, 0).unwrap();
            assert_eq!(
                *date,
                expected.format("%Y%m%d").to_string(),
                "at {expected}"
            );
        }
        let _ = client.quit().await;
    }

    #[test]
    fn an_absent_limit_is_minus_one_to_the_script() {
        assert_eq!(limit_arg(None), Value::from(-1_i64));
        assert_eq!(limit_arg(Some(5)), Value::from(5_i64));
    }
}
