//! The client limiter contract run against Redis, then what only the Redis client
//! limiter does: share one client's counts between instances exactly, keep its keys
//! under the prefix with expiries, and follow the outage policy.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveTime, Utc};
use fred::prelude::{KeysInterface, LuaInterface, SortedSetsInterface};
use sms_core::testing::client_limiter_contract::Backend;
use sms_core::{ClientId, ClientLimiter, ClientQuota, LimitError, QuotaDecision, QuotaWindow};
use sms_limit::{RedisClient, RedisClientLimiter, RedisErrorPolicy, connect_client};

use crate::redis::{CLOSED_PORT, unreachable_config};
use crate::support::{
    count_keys, delete_keys, random_prefix, redis_or_skip, redis_url, test_config,
};

/// Client limiters on one live Redis under a random key prefix.
struct RedisClients {
    client: RedisClient,
    prefix: String,
}

/// Now on the Redis server's clock, which the scripts read.
async fn server_now(client: &RedisClient) -> DateTime<Utc> {
    let time: Vec<String> = client
        .eval(
            "return redis.call('TIME')",
            Vec::<String>::new(),
            Vec::<String>::new(),
        )
        .await
        .expect("reading the server's time");
    let seconds: i64 = time[0].parse().unwrap();
    let micros: u32 = time[1].parse().unwrap();
    DateTime::from_timestamp(seconds, micros * 1000).unwrap()
}

/// How long from `now` to the next UTC midnight.
fn until_midnight(now: DateTime<Utc>) -> Duration {
    let next_day = now
        .date_naive()
        .succ_opt()
        .unwrap()
        .and_time(NaiveTime::MIN)
        .and_utc();
    (next_day - now).to_std().unwrap()
}

#[async_trait]
impl Backend for RedisClients {
    async fn limiter(&self) -> Arc<dyn ClientLimiter> {
        // A fresh limiter gets a fresh sub-prefix, so it starts with nothing counted.
        let config = test_config(&format!("{}{}:", self.prefix, random_prefix()));
        Arc::new(
            RedisClientLimiter::from_client(self.client.clone(), &config)
                .await
                .unwrap(),
        )
    }

    async fn advance(&self, by: Duration) {
        // The scripts read the Redis server's clock: only real time moves it.
        tokio::time::sleep(by).await;
    }

    async fn utc_now(&self) -> DateTime<Utc> {
        server_now(&self.client).await
    }

    async fn cleanup(&self) {
        delete_keys(&self.client, &self.prefix).await;
        assert_eq!(count_keys(&self.client, &self.prefix).await, 0);
    }
}

async fn redis_clients(test: &str) -> Option<RedisClients> {
    let client = redis_or_skip(test).await?;
    Some(RedisClients {
        client,
        prefix: random_prefix(),
    })
}

sms_core::client_limiter_contract_tests!(redis_clients);

fn shop() -> ClientId {
    ClientId::new("shop").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_clients_limits_exactly() {
    let Some(cleanup_client) =
        redis_or_skip("two_instances_share_one_clients_limits_exactly").await
    else {
        return;
    };
    let prefix = random_prefix();
    let config = test_config(&prefix);
    // Two connections, as two gateway instances would have.
    let mut instances = Vec::new();
    for _ in 0..2 {
        let client = connect_client(&redis_url(), &config).await.unwrap();
        instances.push(Arc::new(
            RedisClientLimiter::from_client(client, &config)
                .await
                .unwrap(),
        ));
    }
    let day_client = ClientId::new("daily").unwrap();
    let quotas = [
        (
            day_client,
            ClientQuota {
                per_second: None,
                per_day: Some(100),
            },
        ),
        (
            shop(),
            ClientQuota {
                per_second: Some(100),
                per_day: None,
            },
        ),
    ];
    for (client, quota) in quotas {
        let started = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        // 8 tasks of 50 requests, half of them on each instance.
        for task in 0..8 {
            let limiter = Arc::clone(&instances[task % 2]);
            let client = client.clone();
            tasks.spawn(async move {
                let mut allowed = 0;
                for _ in 0..50 {
                    if limiter.acquire(&client, quota, 1).await.unwrap() == QuotaDecision::Allowed {
                        allowed += 1;
                    }
                }
                allowed
            });
        }
        let mut allowed = 0;
        while let Some(result) = tasks.join_next().await {
            allowed += result.unwrap();
        }
        let elapsed = started.elapsed();
        if quota.per_second.is_some() && elapsed >= Duration::from_millis(900) {
            // The window slid while the tasks ran: the first permits had left it.
            eprintln!("400 requests took {elapsed:?}: not checked exactly");
            assert!(allowed >= 100, "{allowed} allowed");
        } else {
            assert_eq!(allowed, 100, "{quota:?} in {elapsed:?}");
        }
    }
    let stats: u64 = instances.iter().map(|i| i.stats().allowed).sum();
    assert!(stats >= 200, "{stats} allowed by Redis");
    assert!(instances.iter().all(|i| !i.degraded()));
    assert!(delete_keys(&cleanup_client, &prefix).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_live_under_the_prefix_and_expire() {
    let Some(client) = redis_or_skip("client_keys_live_under_the_prefix_and_expire").await else {
        return;
    };
    let prefix = random_prefix();
    let limiter = RedisClientLimiter::from_client(client.clone(), &test_config(&prefix))
        .await
        .unwrap();
    let quota = ClientQuota {
        per_second: Some(10),
        per_day: Some(10),
    };
    let mut before = server_now(&client).await;
    let left = until_midnight(before);
    if left < Duration::from_secs(5) {
        // Let the day turn first, so that the request falls on the day read here.
        tokio::time::sleep(left + Duration::from_millis(100)).await;
        before = server_now(&client).await;
    }
    assert_eq!(
        limiter.acquire(&shop(), quota, 3).await.unwrap(),
        QuotaDecision::Allowed
    );
    let [log, sequence, day_stem] = limiter.keys_for(&shop());
    assert_eq!(log, format!("{prefix}client:shop:s"));
    assert_eq!(sequence, format!("{prefix}client:shop:s:seq"));
    assert_eq!(day_stem, format!("{prefix}client:shop:d:"));
    // The day key is named after the server's UTC date.
    let day_key = format!("{day_stem}{}", before.format("%Y%m%d"));
    let count: Option<i64> = client.get(&day_key).await.unwrap();
    assert_eq!(count, Some(3));
    assert_eq!(client.zcard::<i64, _>(&log).await.unwrap(), 3);
    assert_eq!(count_keys(&client, &format!("{prefix}client:")).await, 3);
    // The window's keys expire a second or so after the window; the day's an hour
    // after the day ends.
    let log_ttl: i64 = client.pttl(&log).await.unwrap();
    let sequence_ttl: i64 = client.pttl(&sequence).await.unwrap();
    assert!(0 < log_ttl && log_ttl <= 2_000, "{log_ttl}");
    assert!(0 < sequence_ttl && sequence_ttl <= 2_000, "{sequence_ttl}");
    let day_ttl: i64 = client.ttl(&day_key).await.unwrap();
    let expected = until_midnight(before).as_secs() as i64 + 3_600;
    assert!(
        (expected - 2..=expected + 1).contains(&day_ttl),
        "the day key expires in {day_ttl} s, expected about {expected} s"
    );
    // Giving everything back leaves no log and no count behind.
    limiter.give_back(&shop(), quota, 3).await.unwrap();
    assert_eq!(
        count_keys(&client, &format!("{prefix}client:shop:d:")).await,
        0
    );
    assert_eq!(client.zcard::<i64, _>(&log).await.unwrap(), 0);
    assert!(!limiter.degraded());
    delete_keys(&client, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fail_open_allows_this_instances_share_of_each_limit() {
    // Four instances: this one may use a quarter of each limit.
    let config = unreachable_config(RedisErrorPolicy::FailOpen);
    let limiter = RedisClientLimiter::connect(CLOSED_PORT, &config)
        .await
        .unwrap();
    let quota = ClientQuota {
        per_second: Some(40),
        per_day: Some(1000),
    };
    let mut allowed = 0;
    for _ in 0..15 {
        if limiter.acquire(&shop(), quota, 1).await.unwrap() == QuotaDecision::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10);
    // A refusal names the client's limit, not this instance's share of it.
    assert!(matches!(
        limiter.acquire(&shop(), quota, 1).await.unwrap(),
        QuotaDecision::Limited {
            window: QuotaWindow::Second,
            limit: 40,
            ..
        }
    ));
    // The fallback counted the permits, so the fallback gets them back.
    limiter.give_back(&shop(), quota, 2).await.unwrap();
    assert_eq!(
        limiter.acquire(&shop(), quota, 2).await.unwrap(),
        QuotaDecision::Allowed
    );
    assert!(limiter.degraded());
    let stats = limiter.stats();
    assert_eq!((stats.allowed, stats.limited), (0, 0));
    assert_eq!(stats.redis_errors, 18);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fail_closed_reports_the_outage() {
    let config = unreachable_config(RedisErrorPolicy::FailClosed);
    let limiter = RedisClientLimiter::connect(CLOSED_PORT, &config)
        .await
        .unwrap();
    let quota = ClientQuota {
        per_second: Some(40),
        per_day: None,
    };
    let error = limiter.acquire(&shop(), quota, 1).await.unwrap_err();
    assert!(matches!(error, LimitError::Unavailable(_)), "{error}");
    let error = limiter.give_back(&shop(), quota, 1).await.unwrap_err();
    assert!(matches!(error, LimitError::Unavailable(_)), "{error}");
    assert!(limiter.degraded());
    // What needs no counting needs no Redis.
    assert_eq!(
        limiter
            .acquire(&shop(), ClientQuota::default(), 1)
            .await
            .unwrap(),
        QuotaDecision::Allowed
    );
    assert_eq!(
        limiter.acquire(&shop(), quota, 0).await.unwrap(),
        QuotaDecision::Allowed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_client_script_is_loaded_again() {
    let Some(client) = redis_or_skip("a_flushed_client_script_is_loaded_again").await else {
        return;
    };
    let prefix = random_prefix();
    let limiter = RedisClientLimiter::from_client(client.clone(), &test_config(&prefix))
        .await
        .unwrap();
    let quota = ClientQuota {
        per_second: None,
        per_day: Some(2),
    };
    assert_eq!(
        limiter.acquire(&shop(), quota, 1).await.unwrap(),
        QuotaDecision::Allowed
    );
    // As after a Redis restart: the server no longer knows the scripts.
    client.script_flush(false).await.unwrap();
    limiter.give_back(&shop(), quota, 1).await.unwrap();
    assert_eq!(
        limiter.acquire(&shop(), quota, 2).await.unwrap(),
        QuotaDecision::Allowed
    );
    assert!(!limiter.degraded());
    assert_eq!(limiter.stats().redis_errors, 0);
    delete_keys(&client, &prefix).await;
}
