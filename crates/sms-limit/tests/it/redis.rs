//! The contract run against Redis, then what only the Redis limiters do: share one
//! count between clients, survive an outage by policy, and reload a flushed script.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::LuaInterface;
use sms_core::testing::limiter_contract::Backend;
use sms_core::{
    PhoneNumber, Priority, RateDecision, RateLimiter, RecipientDecision, RecipientLimiter,
};
use sms_limit::{
    LimitConfig, RecipientWindow, RedisClient, RedisErrorPolicy, RedisLimiter,
    RedisRecipientLimiter, connect_client,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::{
    count_keys, delete_keys, eventually, random_prefix, redis_or_skip, redis_url, test_config,
};

/// Limiters on one live Redis under a random key prefix.
struct Redis {
    client: RedisClient,
    prefix: String,
}

#[async_trait]
impl Backend for Redis {
    async fn global(&self, limit: u32, window: Duration) -> Arc<dyn RateLimiter> {
        self.global_with_headroom(limit, window, 0.0).await
    }

    async fn global_with_headroom(
        &self,
        limit: u32,
        window: Duration,
        high_priority_headroom: f64,
    ) -> Arc<dyn RateLimiter> {
        // A fresh limiter gets a fresh sub-prefix, so it starts with nothing counted.
        let config = LimitConfig {
            global_per_second: limit,
            global_window_ms: window.as_millis() as u64,
            high_priority_headroom,
            ..test_config(&format!("{}{}:", self.prefix, random_prefix()))
        };
        Arc::new(
            RedisLimiter::from_client(self.client.clone(), &config)
                .await
                .unwrap(),
        )
    }

    async fn recipients(&self, windows: Vec<RecipientWindow>) -> Arc<dyn RecipientLimiter> {
        let config = LimitConfig {
            recipient_windows: windows,
            ..test_config(&format!("{}{}:", self.prefix, random_prefix()))
        };
        Arc::new(
            RedisRecipientLimiter::from_client(self.client.clone(), &config)
                .await
                .unwrap(),
        )
    }

    async fn advance(&self, by: Duration) {
        // The scripts read the Redis server's clock: only real time moves it.
        tokio::time::sleep(by).await;
    }

    async fn cleanup(&self) {
        delete_keys(&self.client, &self.prefix).await;
        assert_eq!(count_keys(&self.client, &self.prefix).await, 0);
    }
}

async fn redis(test: &str) -> Option<Redis> {
    let client = redis_or_skip(test).await?;
    Some(Redis {
        client,
        prefix: random_prefix(),
    })
}

sms_core::limiter_contract_tests!(redis);

fn phone(n: u32) -> PhoneNumber {
    PhoneNumber::parse(&format!("+86137{n:08}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_one_redis_share_the_counts() {
    let Some(cleanup_client) = redis_or_skip("two_clients_on_one_redis_share_the_counts").await
    else {
        return;
    };
    let prefix = random_prefix();
    let config = LimitConfig {
        global_per_second: 10,
        global_window_ms: 60_000,
        ..test_config(&prefix)
    };
    // Two clients, as two gateway instances would have.
    let first_client = connect_client(&redis_url(), &config).await.unwrap();
    let second_client = connect_client(&redis_url(), &config).await.unwrap();
    let first = RedisLimiter::from_client(first_client.clone(), &config)
        .await
        .unwrap();
    let second = RedisLimiter::from_client(second_client.clone(), &config)
        .await
        .unwrap();
    assert!(first.acquire(6).await.unwrap().is_allowed());
    assert!(second.acquire(4).await.unwrap().is_allowed());
    assert!(!first.acquire(1).await.unwrap().is_allowed());
    assert!(!second.acquire(1).await.unwrap().is_allowed());
    assert_eq!(first.stats().allowed + second.stats().allowed, 2);
    assert_eq!(first.stats().limited + second.stats().limited, 2);

    let first = RedisRecipientLimiter::from_client(first_client, &config)
        .await
        .unwrap();
    let second = RedisRecipientLimiter::from_client(second_client, &config)
        .await
        .unwrap();
    assert_eq!(
        first.check(&[phone(1)]).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    assert!(matches!(
        second.check(&[phone(1)]).await.unwrap()[..],
        [RecipientDecision::Limited { limit: 1, .. }]
    ));

    assert!(delete_keys(&cleanup_client, &prefix).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_live_under_the_prefix_and_expire() {
    let Some(client) = redis_or_skip("keys_live_under_the_prefix_and_expire").await else {
        return;
    };
    let prefix = random_prefix();
    let config = LimitConfig {
        global_window_ms: 60_000,
        ..test_config(&prefix)
    };
    let limiter = RedisLimiter::from_client(client.clone(), &config)
        .await
        .unwrap();
    assert!(limiter.acquire(1).await.unwrap().is_allowed());
    let recipients = RedisRecipientLimiter::from_client(client.clone(), &config)
        .await
        .unwrap();
    recipients.check(&[phone(9)]).await.unwrap();
    let ttls: Vec<i64> = client
        .eval(
            "local out = {} \
             for _, key in ipairs(redis.call('KEYS', ARGV[1])) do \
               out[#out + 1] = redis.call('PTTL', key) end \
             return out",
            Vec::<String>::new(),
            vec![format!("{prefix}*")],
        )
        .await
        .unwrap();
    // Global log and sequence, recipient log and sequence: all expire on their own.
    assert_eq!(ttls.len(), 4, "{ttls:?}");
    assert!(ttls.iter().all(|&ttl| ttl > 0), "{ttls:?}");
    assert!(recipients.key_for(&phone(9)).starts_with(&prefix));
    assert!(limiter.keys().iter().all(|key| key.starts_with(&prefix)));
    delete_keys(&client, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_script_is_loaded_again() {
    let Some(client) = redis_or_skip("a_flushed_script_is_loaded_again").await else {
        return;
    };
    let prefix = random_prefix();
    let config = LimitConfig {
        global_per_second: 2,
        global_window_ms: 60_000,
        ..test_config(&prefix)
    };
    let limiter = RedisLimiter::from_client(client.clone(), &config)
        .await
        .unwrap();
    assert!(limiter.acquire(1).await.unwrap().is_allowed());
    // As after a Redis restart: the server no longer knows the script.
    client.script_flush(false).await.unwrap();
    assert!(limiter.acquire(1).await.unwrap().is_allowed());
    assert!(!limiter.acquire(1).await.unwrap().is_allowed());
    assert!(!limiter.degraded());
    assert_eq!(limiter.stats().redis_errors, 0);
    delete_keys(&client, &prefix).await;
}

/// Settings pointing at a port where nothing listens.
pub(crate) fn unreachable_config(policy: RedisErrorPolicy) -> LimitConfig {
    LimitConfig {
        global_per_second: 40,
        global_window_ms: 60_000,
        instances: 4,
        on_redis_error: policy,
        command_timeout_ms: 100,
        connect_timeout_ms: 200,
        ..LimitConfig::default()
    }
}

pub(crate) const CLOSED_PORT: &str = "redis://127.0.0.1:1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fail_open_allows_this_instances_share() {
    let config = unreachable_config(RedisErrorPolicy::FailOpen);
    let limiter = RedisLimiter::connect(CLOSED_PORT, &config).await.unwrap();
    // 40 per window over 4 instances: this one may send 10.
    let mut allowed = 0;
    for _ in 0..15 {
        if limiter.acquire(1).await.unwrap().is_allowed() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10);
    assert!(limiter.degraded());
    let stats = limiter.stats();
    assert_eq!((stats.fallback, stats.redis_errors), (15, 15));
    assert_eq!((stats.allowed, stats.limited), (0, 0));

    let recipients = RedisRecipientLimiter::connect(CLOSED_PORT, &config)
        .await
        .unwrap();
    assert_eq!(
        recipients.check(&[phone(1)]).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    assert!(matches!(
        recipients.check(&[phone(1)]).await.unwrap()[..],
        [RecipientDecision::Limited { .. }]
    ));
    assert!(recipients.degraded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fail_open_keeps_the_lanes() {
    let config = LimitConfig {
        high_priority_headroom: 0.2,
        ..unreachable_config(RedisErrorPolicy::FailOpen)
    };
    let limiter = RedisLimiter::connect(CLOSED_PORT, &config).await.unwrap();
    assert_eq!(limiter.normal_ceiling(), 32);
    // This instance's share is 10, of which normal messages may use 8.
    assert_eq!(limiter.fallback().normal_ceiling(), 8);
    let mut normal = 0;
    for _ in 0..10 {
        if limiter
            .acquire_lane(1, Priority::Normal)
            .await
            .unwrap()
            .is_allowed()
        {
            normal += 1;
        }
    }
    assert_eq!(normal, 8);
    assert!(
        limiter
            .acquire_lane(2, Priority::High)
            .await
            .unwrap()
            .is_allowed()
    );
    assert!(!limiter.acquire(1).await.unwrap().is_allowed());
    assert!(limiter.degraded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fail_closed_limits_everything() {
    let config = unreachable_config(RedisErrorPolicy::FailClosed);
    let limiter = RedisLimiter::connect(CLOSED_PORT, &config).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            limiter.acquire(1).await.unwrap(),
            RateDecision::Limited {
                retry_after: Duration::from_secs(60)
            }
        );
    }
    assert_eq!(
        limiter.acquire_lane(1, Priority::Normal).await.unwrap(),
        RateDecision::Limited {
            retry_after: Duration::from_secs(60)
        }
    );
    assert!(limiter.degraded());
    assert_eq!(limiter.stats().fallback, 4);

    let recipients = RedisRecipientLimiter::connect(CLOSED_PORT, &config)
        .await
        .unwrap();
    let error = recipients.check(&[phone(1)]).await.unwrap_err();
    assert!(
        matches!(error, sms_core::LimitError::Unavailable(_)),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fail_open_gives_back_to_the_fallback() {
    let config = unreachable_config(RedisErrorPolicy::FailOpen);
    let recipients = RedisRecipientLimiter::connect(CLOSED_PORT, &config)
        .await
        .unwrap();
    // The fallback counted the message, so the fallback gets it back.
    assert_eq!(
        recipients.check(&[phone(1)]).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    recipients.give_back(&[phone(1)]).await.unwrap();
    assert_eq!(
        recipients.check(&[phone(1)]).await.unwrap(),
        vec![RecipientDecision::Allowed]
    );
    assert!(matches!(
        recipients.check(&[phone(1)]).await.unwrap()[..],
        [RecipientDecision::Limited { .. }]
    ));
    assert!(recipients.degraded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fail_closed_give_back_reports_the_outage() {
    let config = unreachable_config(RedisErrorPolicy::FailClosed);
    let recipients = RedisRecipientLimiter::connect(CLOSED_PORT, &config)
        .await
        .unwrap();
    let error = recipients.give_back(&[phone(1)]).await.unwrap_err();
    assert!(
        matches!(error, sms_core::LimitError::Unavailable(_)),
        "{error}"
    );
    assert!(recipients.degraded());
    // Nothing to give back needs no Redis.
    recipients.give_back(&[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_back_every_message_leaves_no_key_behind() {
    let Some(client) = redis_or_skip("giving_back_every_message_leaves_no_key_behind").await else {
        return;
    };
    let prefix = random_prefix();
    let config = LimitConfig {
        recipient_windows: vec![RecipientWindow::per_seconds(3, 60)],
        ..test_config(&prefix)
    };
    let recipients = RedisRecipientLimiter::from_client(client.clone(), &config)
        .await
        .unwrap();
    let numbers = [phone(5), phone(5), phone(6)];
    recipients.check(&numbers).await.unwrap();
    let logs = format!("{prefix}limit:rcpt:");
    assert_eq!(count_keys(&client, &logs).await, 2);
    recipients.give_back(&numbers).await.unwrap();
    // An emptied log is deleted, as Redis deletes an empty sorted set.
    assert_eq!(count_keys(&client, &logs).await, 0);
    assert!(!recipients.degraded());
    delete_keys(&client, &prefix).await;
}

/// A TCP proxy to Redis that the test can cut, to simulate an outage: when `cut`
/// turns true it stops accepting and closes every proxied connection.
async fn proxy(listener: TcpListener, target: String, cut: watch::Receiver<bool>) {
    let mut stop = cut.clone();
    loop {
        let (mut inbound, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let target = target.clone();
        let mut stop_connection = cut.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(target).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = stop_connection.changed() => {}
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_coming_back_is_picked_up_without_restart() {
    let Some(client) = redis_or_skip("redis_coming_back_is_picked_up_without_restart").await else {
        return;
    };
    let url = redis_url();
    let target = url
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (cut, cut_rx) = watch::channel(false);
    tokio::spawn(proxy(listener, target.clone(), cut_rx));

    let prefix = random_prefix();
    let config = LimitConfig {
        global_per_second: 1000,
        global_window_ms: 60_000,
        command_timeout_ms: 500,
        ..test_config(&prefix)
    };
    let limiter = RedisLimiter::connect(&format!("redis://{address}"), &config)
        .await
        .unwrap();
    assert!(limiter.acquire(1).await.unwrap().is_allowed());
    assert!(!limiter.degraded());

    // Outage: the proxy closes the connection and refuses new ones.
    cut.send(true).unwrap();
    let went_down = eventually(Duration::from_secs(10), || async {
        let _ = limiter.acquire(1).await;
        limiter.degraded()
    })
    .await;
    assert!(went_down, "the limiter should notice Redis is gone");
    assert!(limiter.stats().fallback > 0);

    // Redis is back on the same address: no restart of the limiter needed.
    let listener = TcpListener::bind(address).await.unwrap();
    let (_restore, restore_rx) = watch::channel(false);
    tokio::spawn(proxy(listener, target, restore_rx));
    let restored = eventually(Duration::from_secs(20), || async {
        let _ = limiter.acquire(1).await;
        !limiter.degraded()
    })
    .await;
    assert!(
        restored,
        "the limiter should use Redis again once it is reachable"
    );
    assert!(limiter.stats().allowed >= 2);
    delete_keys(&client, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_absent_at_start_is_picked_up_later() {
    let Some(client) = redis_or_skip("redis_absent_at_start_is_picked_up_later").await else {
        return;
    };
    let target = redis_url()
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    // A free port with nothing listening yet.
    let address = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let prefix = random_prefix();
    let config = LimitConfig {
        global_per_second: 1000,
        global_window_ms: 60_000,
        command_timeout_ms: 500,
        connect_timeout_ms: 200,
        ..test_config(&prefix)
    };
    let limiter = RedisLimiter::connect(&format!("redis://{address}"), &config)
        .await
        .unwrap();
    assert!(limiter.acquire(1).await.unwrap().is_allowed());
    assert!(limiter.degraded());

    let listener = TcpListener::bind(address).await.unwrap();
    let (_keep, keep_rx) = watch::channel(false);
    tokio::spawn(proxy(listener, target, keep_rx));
    let restored = eventually(Duration::from_secs(20), || async {
        let _ = limiter.acquire(1).await;
        !limiter.degraded()
    })
    .await;
    assert!(
        restored,
        "the limiter should start using Redis once it appears"
    );
    assert!(limiter.stats().allowed >= 1);
    delete_keys(&client, &prefix).await;
}
