//! Test plumbing: the Redis URL, skipping when Redis is absent, key prefixes, cleanup.

use std::time::Duration;

use fred::prelude::{ClientLike, LuaInterface};
use rand::Rng;
use sms_limit::{LimitConfig, RedisClient, connect_client};

/// The Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("SMS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test uses.
pub fn random_prefix() -> String {
    let suffix: u64 = rand::rng().random();
    format!("sms-limit-test:{suffix:016x}:")
}

/// Settings for tests against a live Redis: a generous timeout, because a loaded test
/// machine must not turn into "Redis unreachable" and a fallback decision.
pub fn test_config(prefix: &str) -> LimitConfig {
    LimitConfig {
        key_prefix: prefix.to_owned(),
        command_timeout_ms: 10_000,
        connect_timeout_ms: 5_000,
        ..LimitConfig::default()
    }
}

/// A connected client, or `None` (after printing why) when Redis is not running.
/// Under `CI=true` a missing Redis fails the test instead.
pub async fn redis_or_skip(test: &str) -> Option<RedisClient> {
    let url = redis_url();
    let ci = std::env::var("CI").as_deref() == Ok("true");
    // Without CI a missing Redis is skipped quickly; under CI it must be there, so a
    // slow connect on a loaded machine gets the tests' full connect timeout.
    let probe = LimitConfig {
        connect_timeout_ms: if ci { 5_000 } else { 1_000 },
        ..test_config("unused:")
    };
    let client = connect_client(&url, &probe)
        .await
        .expect("the test Redis URL is valid");
    if client.is_connected() {
        return Some(client);
    }
    if ci {
        panic!("{test}: Redis at {url} is unreachable and CI=true, so Redis tests must run");
    }
    eprintln!("skipping {test}: Redis at {url} is unreachable (set SMS_TEST_REDIS_URL)");
    None
}

/// Deletes every key under `prefix`; returns how many there were.
pub async fn delete_keys(client: &RedisClient, prefix: &str) -> i64 {
    client
        .eval(
            "local keys = redis.call('KEYS', ARGV[1]) \
             for _, key in ipairs(keys) do redis.call('DEL', key) end \
             return #keys",
            Vec::<String>::new(),
            vec![format!("{prefix}*")],
        )
        .await
        .expect("deleting test keys")
}

/// How many keys exist under `prefix`.
pub async fn count_keys(client: &RedisClient, prefix: &str) -> i64 {
    client
        .eval(
            "return #redis.call('KEYS', ARGV[1])",
            Vec::<String>::new(),
            vec![format!("{prefix}*")],
        )
        .await
        .expect("counting test keys")
}

/// Polls `condition` every 50 ms for up to `limit`; true if it became true.
pub async fn eventually<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
