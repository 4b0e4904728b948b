//! The shared board in Redis: one document every gateway instance reads and changes.
//!
//! Each call is one Lua script run atomically on the server, so a compare-and-set
//! write cannot interleave with another writer: the script compares the version,
//! writes and announces in one step, and nothing is ever read, changed in Rust and
//! written back. The scripts read the server's clock (`TIME`), never the caller's, so
//! instances whose clocks disagree still agree on when claims and reports expire.
//!
//! # Keys
//!
//! For the board `{name}` under the key prefix `{prefix}` (`config.key_prefix`):
//!
//! | key | type | holds |
//! |-----|------|-------|
//! | `{prefix}board:{name}` | hash | `v`, the version (missing: 0), and `doc` |
//! | `{prefix}board:{name}:changed` | channel | each write publishes its new version |
//! | `{prefix}board:{name}:claim:{claim}` | string, with a TTL | the claim's holder |
//! | `{prefix}board:{name}:reports` | hash | instance → its last report |
//! | `{prefix}board:{name}:reports:until` | sorted set | instance → expiry (server ms) |
//!
//! Expired reports are removed by the next `report` or `reports` call; both report keys
//! expire with the last report, so a board nobody reports to leaves no reports behind.
//!
//! # Connections
//!
//! A board has two connections of its own: one for commands and one subscribed to the
//! channel. Both reconnect forever with a backoff capped at 1 s, so an instance rejoins
//! the board within about a second of Redis coming back. Every command carries
//! `command_timeout_ms` and fails at once while its connection is down: the caller,
//! not the board, decides what to do during an outage.
//!
//! A task per board listens on the subscription. It subscribes as soon as the
//! connection is up, also when Redis was down when the board was built, and again
//! after every reconnect (a new connection has no subscription). Each message and each
//! reconnect wakes [`SharedBoard::changed`]: writes made while the subscription was down
//! were never announced, so readers are told to read again. When the board is
//! dropped the task ends, and on its way out closes both connections (waiting at most
//! `command_timeout_ms` for each; a connection that cannot close in that time is left
//! to its reconnect loop).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fred::prelude::{Client, ClientLike, EventInterface, Options, PubsubInterface, Server, Value};
use fred::types::Message;
use sms_core::{BoardRead, BoardUnavailable, BoardWrite, SharedBoard};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::config::LimitConfig;
use crate::error::Error;
use crate::redis::connect_client_with_backoff;
use crate::script::ScriptRunner;

/// The longest wait between reconnect attempts, in milliseconds: short, so that an
/// instance rejoins the board within a few seconds of Redis returning.
const MAX_RECONNECT_DELAY_MS: u32 = 1_000;

/// How often the listener tries to subscribe while it is not subscribed.
const SUBSCRIBE_RETRY: Duration = Duration::from_millis(250);

/// The longest TTL passed to Redis: a century, far below what `PX` refuses.
const MAX_TTL_MS: u128 = 100 * 365 * 24 * 3_600 * 1_000;

/// The document, its version and the server's clock, read together.
///
/// KEYS[1]: the board.
/// Returns `{version, doc or nil, seconds, microseconds}`.
const READ_SCRIPT: &str = r"
local t = redis.call('TIME')
local board = redis.call('HMGET', KEYS[1], 'v', 'doc')
return {tonumber(board[1] or '0'), board[2], t[1], t[2]}
";

/// Compare-and-set: writes and announces only on the expected version.
///
/// KEYS[1]: the board. ARGV: expected version, document, channel.
/// Returns `{1, new_version, nil, 0, 0}` when written, or
/// `{0, version, doc or nil, seconds, microseconds}`: what the board holds.
const WRITE_SCRIPT: &str = r"
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if version == tonumber(ARGV[1]) then
  version = version + 1
  local v = string.format('%.0f', version)
  redis.call('HSET', KEYS[1], 'v', v, 'doc', ARGV[2])
  redis.call('PUBLISH', ARGV[3], v)
  return {1, version, false, 0, 0}
end
local t = redis.call('TIME')
return {0, version, redis.call('HGET', KEYS[1], 'doc'), t[1], t[2]}
";

/// Takes a claim unless someone else holds it.
///
/// KEYS[1]: the claim. ARGV: holder, TTL in ms.
/// Returns 1 when the holder has the claim now (taken now, or held already), else 0.
const CLAIM_SCRIPT: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
";

/// Gives a claim back if the holder still holds it.
///
/// KEYS[1]: the claim. ARGV[1]: the holder. Returns the number of keys deleted.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// The start of both report scripts: reads the server clock into `now` (ms) and
/// removes the reports that expired by then.
///
/// KEYS[1]: the reports (hash); KEYS[2]: their expiry (sorted set).
macro_rules! prune_reports {
    () => {
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function int(x) return string.format('%.0f', x) end
for _, instance in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', int(now))) do
  redis.call('HDEL', KEYS[1], instance)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', int(now))
"
    };
}

/// Keeps one instance's report until now + TTL, and removes expired ones.
///
/// KEYS: as for `prune_reports`. ARGV: instance, report, TTL in ms.
/// Both keys expire when the last report does. Returns 0.
const REPORT_SCRIPT: &str = concat!(
    prune_reports!(),
    r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], int(now + tonumber(ARGV[3])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
redis.call('PEXPIREAT', KEYS[2], last[2])
return 0
"
);

/// Every report that has not expired, after removing those that have.
///
/// KEYS: as for `prune_reports`. Returns `{instance, report, instance, report, …}`.
const REPORTS_SCRIPT: &str = concat!(
    prune_reports!(),
    r"
return redis.call('HGETALL', KEYS[1])
"
);

/// A [`SharedBoard`] in Redis, shared by every instance that uses the same URL, key
/// prefix and board name (see the module docs for the keys and connections).
#[derive(Debug)]
pub struct RedisBoard {
    read: ScriptRunner,
    write: ScriptRunner,
    claim: ScriptRunner,
    release: ScriptRunner,
    report: ScriptRunner,
    reports: ScriptRunner,
    /// The board's hash; also the start of every other key of the board.
    key: String,
    channel: String,
    /// The reports hash and its expiry set.
    report_keys: Vec<String>,
    /// Bumped by the listener on every announced write and every reconnect.
    changes: watch::Receiver<u64>,
}

impl RedisBoard {
    /// Connects to the board `name` at `url`, under `config.key_prefix`, with
    /// `config.command_timeout_ms` on every call.
    ///
    /// Redis being down is not an error: the board is built, its calls fail with
    /// [`BoardUnavailable`] until Redis answers, and it subscribes to changes once the
    /// connection is up. A malformed URL, invalid settings and Redis Cluster fail (see
    /// [`crate::connect_client`]).
    pub async fn connect(url: &str, config: &LimitConfig, name: &str) -> Result<Self, Error> {
        let client =
            connect_client_with_backoff(url, config, MAX_RECONNECT_DELAY_MS, "board").await?;
        let timeout = config.command_timeout();
        let key = format!("{}board:{name}", config.key_prefix);
        let channel = format!("{key}:changed");

        // Same settings, a connection of its own: a subscribed connection takes no
        // other commands.
        let subscriber = client.clone_new();
        let messages = subscriber.message_rx();
        let reconnects = subscriber.reconnect_rx();
        // The connection task runs until the client quits (see `listen`).
        let _connection_task = subscriber.connect();
        let mut subscribed = false;
        // Redis up: subscribe now, so a write right after `connect` is announced.
        // Redis down: do not wait a second time; the listener subscribes later.
        if client.is_connected() {
            let connect_timeout = config.connect_timeout();
            let _ = tokio::time::timeout(connect_timeout, subscriber.wait_for_connect()).await;
            subscribed = subscribe(&subscriber, &channel, timeout).await;
        }
        let (notify, changes) = watch::channel(0);
        tokio::spawn(listen(Listener {
            subscriber,
            client: client.clone(),
            channel: channel.clone(),
            subscribed,
            messages,
            reconnects,
            notify,
            timeout,
        }));

        let runner = |lua: &'static str| ScriptRunner::new(client.clone(), lua, timeout);
        Ok(Self {
            read: runner(READ_SCRIPT).await,
            write: runner(WRITE_SCRIPT).await,
            claim: runner(CLAIM_SCRIPT).await,
            release: runner(RELEASE_SCRIPT).await,
            report: runner(REPORT_SCRIPT).await,
            reports: runner(REPORTS_SCRIPT).await,
            report_keys: vec![format!("{key}:reports"), format!("{key}:reports:until")],
            key,
            channel,
            changes,
        })
    }

    /// The board's hash, where the version and the document are kept. Every other key
    /// of the board starts with it.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The channel every write publishes its new version on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    fn claim_key(&self, name: &str) -> String {
        format!("{}:claim:{name}", self.key)
    }
}

#[async_trait]
impl SharedBoard for RedisBoard {
    async fn read(&self) -> Result<BoardRead, BoardUnavailable> {
        let (version, doc, seconds, micros): (u64, Option<String>, i64, i64) = self
            .read
            .run(vec![self.key.clone()], Vec::new())
            .await
            .map_err(unavailable)?;
        Ok(BoardRead {
            version,
            doc,
            now: server_time(seconds, micros)?,
        })
    }

    async fn write(&self, expected: u64, doc: &str) -> Result<BoardWrite, BoardUnavailable> {
        let args = vec![
            Value::from(expected.to_string()),
            Value::from(doc),
            Value::from(self.channel.as_str()),
        ];
        let (written, version, current, seconds, micros): (i64, u64, Option<String>, i64, i64) =
            self.write
                .run(vec![self.key.clone()], args)
                .await
                .map_err(unavailable)?;
        if written == 1 {
            return Ok(BoardWrite::Written { version });
        }
        Ok(BoardWrite::Conflict(BoardRead {
            version,
            doc: current,
            now: server_time(seconds, micros)?,
        }))
    }

    /// Takes the claim with `SET NX PX`. A holder that claims again what it holds
    /// already is answered `true`, and the claim keeps the expiry it was taken with:
    /// claiming again does not extend it.
    async fn claim(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, BoardUnavailable> {
        let args = vec![Value::from(holder), Value::from(ttl_millis(ttl))];
        let held: i64 = self
            .claim
            .run(vec![self.claim_key(name)], args)
            .await
            .map_err(unavailable)?;
        Ok(held == 1)
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), BoardUnavailable> {
        let _deleted: i64 = self
            .release
            .run(vec![self.claim_key(name)], vec![Value::from(holder)])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn report(
        &self,
        instance: &str,
        report: &str,
        ttl: Duration,
    ) -> Result<(), BoardUnavailable> {
        let args = vec![
            Value::from(instance),
            Value::from(report),
            Value::from(ttl_millis(ttl)),
        ];
        let _: i64 = self
            .report
            .run(self.report_keys.clone(), args)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn reports(&self) -> Result<Vec<(String, String)>, BoardUnavailable> {
        self.reports
            .run(self.report_keys.clone(), Vec::new())
            .await
            .map_err(unavailable)
    }

    /// Returns on the next write announced after the call, or when the subscription
    /// reconnects (writes may have gone unannounced meanwhile).
    async fn changed(&self) {
        let mut changes = self.changes.clone();
        changes.borrow_and_update();
        if changes.changed().await.is_err() {
            // The listener is gone (its runtime shut down): nothing will announce.
            std::future::pending::<()>().await;
        }
    }
}

/// What the listener task owns.
struct Listener {
    subscriber: Client,
    /// The board's command client, closed with the subscriber when the board is dropped.
    client: Client,
    channel: String,
    subscribed: bool,
    messages: broadcast::Receiver<Message>,
    reconnects: broadcast::Receiver<Server>,
    notify: watch::Sender<u64>,
    timeout: Duration,
}

/// Keeps the subscription up and turns its messages and reconnects into wake-ups,
/// until the board (the only long-lived receiver of `notify`) is dropped; then closes
/// both connections.
async fn listen(mut listener: Listener) {
    let mut retry = tokio::time::interval(SUBSCRIBE_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let wake = |notify: &watch::Sender<u64>| notify.send_modify(|n| *n = n.wrapping_add(1));
    loop {
        tokio::select! {
            () = listener.notify.closed() => break,
            message = listener.messages.recv() => match message {
                // A lagging receiver missed messages: wake the readers all the same.
                Ok(_) | Err(RecvError::Lagged(_)) => wake(&listener.notify),
                Err(RecvError::Closed) => break,
            },
            reconnect = listener.reconnects.recv() => match reconnect {
                // A new connection is not subscribed, and writes made while the old one
                // was down were not announced.
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    listener.subscribed = false;
                    wake(&listener.notify);
                }
                Err(RecvError::Closed) => break,
            },
            _ = retry.tick(), if !listener.subscribed => {
                listener.subscribed =
                    subscribe(&listener.subscriber, &listener.channel, listener.timeout).await;
            }
        }
    }
    for client in [&listener.subscriber, &listener.client] {
        let _ = tokio::time::timeout(listener.timeout, client.quit()).await;
    }
}

/// Subscribes `subscriber` to `channel`; whether it is subscribed now.
async fn subscribe(subscriber: &Client, channel: &str, timeout: Duration) -> bool {
    if !subscriber.is_connected() {
        return false;
    }
    let options = Options {
        timeout: Some(timeout),
        fail_fast: true,
        ..Options::default()
    };
    let subscriber = subscriber.with_options(&options);
    match tokio::time::timeout(timeout, subscriber.subscribe(channel)).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::debug!(%error, channel, "could not subscribe to board changes yet");
            false
        }
        Err(_) => false,
    }
}

fn unavailable(error: fred::error::Error) -> BoardUnavailable {
    BoardUnavailable(Box::new(error))
}

/// A TTL in whole milliseconds as `PX` takes it: at least 1, at most [`MAX_TTL_MS`].
fn ttl_millis(ttl: Duration) -> i64 {
    // Both bounds fit an i64.
    ttl.as_millis().clamp(1, MAX_TTL_MS) as i64
}

/// The instant a `TIME` reply names.
fn server_time(seconds: i64, micros: i64) -> Result<DateTime<Utc>, BoardUnavailable> {
    u32::try_from(micros)
        .ok()
        .and_then(|micros| micros.checked_mul(1_000))
        .and_then(|nanos| DateTime::from_timestamp(seconds, nanos))
        .ok_or_else(|| {
            BoardUnavailable(format!("redis TIME out of range: {seconds} s {micros} µs").into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_whole_milliseconds_within_what_redis_takes() {
        assert_eq!(ttl_millis(Duration::from_millis(1500)), 1_500);
        assert_eq!(ttl_millis(Duration::ZERO), 1, "PX 0 is refused");
        assert_eq!(ttl_millis(Duration::from_micros(10)), 1);
        assert_eq!(ttl_millis(Duration::MAX), MAX_TTL_MS as i64);
    }

    #[test]
    fn server_time_converts_and_refuses_nonsense() {
        let now = server_time(1_700_000_000, 250_000).unwrap();
        assert_eq!(now.timestamp(), 1_700_000_000);
        assert_eq!(now.timestamp_subsec_micros(), 250_000);
        assert!(server_time(1, -1).is_err());
        assert!(server_time(i64::MAX, 0).is_err());
    }
}
