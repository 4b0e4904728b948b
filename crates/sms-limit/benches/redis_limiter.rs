//! Decisions per second of the Redis global limiter with 64 concurrent tasks.
//!
//! Not a criterion benchmark: what matters is throughput under concurrency against one
//! server, which `cargo xtask bench` compares with `redis-benchmark` running `EVALSHA`
//! of the same script with as many clients. The limit is far above what the machine
//! reaches, so every decision runs the full "allowed" path of the script.
//!
//! Environment: `SMS_BENCH_REDIS_URL` (else `SMS_TEST_REDIS_URL`, else
//! `redis://127.0.0.1:6379`), `SMS_BENCH_SECONDS` (default 5), `SMS_BENCH_CONCURRENCY`
//! (default 64), `SMS_BENCH_OUT` (a file that receives the result as JSON). An
//! unreachable server is reported as skipped, not as a failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sms_core::{RateDecision, RateLimiter};
use sms_limit::{LimitConfig, RedisErrorPolicy, RedisLimiter};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(json: &str) {
    println!("{json}");
    if let Ok(path) = std::env::var("SMS_BENCH_OUT") {
        if let Err(e) = std::fs::write(&path, json) {
            eprintln!("could not write {path}: {e}");
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this binary takes no arguments of its own.
    let url = std::env::var("SMS_BENCH_REDIS_URL")
        .or_else(|_| std::env::var("SMS_TEST_REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let seconds: f64 = env_or("SMS_BENCH_SECONDS", 5.0);
    let concurrency: usize = env_or("SMS_BENCH_CONCURRENCY", 64);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async move {
        let config = LimitConfig {
            global_per_second: 1_000_000_000,
            key_prefix: format!("sms-bench-{:08x}:", rand::random::<u32>()),
            on_redis_error: RedisErrorPolicy::FailClosed,
            command_timeout_ms: 2_000,
            ..LimitConfig::default()
        };
        let limiter = match RedisLimiter::connect(&url, &config).await {
            Ok(l) => Arc::new(l),
            Err(e) => {
                report(&format!(
                    r#"{{"skipped":"redis limiter: cannot connect to {url}: {}"}}"#,
                    e.to_string().replace('"', "'")
                ));
                return;
            }
        };
        // One call first: loads the script and proves the server answers.
        let first = limiter.acquire(1).await;
        if limiter.degraded() || !matches!(first, Ok(RateDecision::Allowed)) {
            report(&format!(
                r#"{{"skipped":"redis limiter: no answer from {url}"}}"#
            ));
            return;
        }
        let before = limiter.stats();
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let decisions = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (limiter, decisions) = (limiter.clone(), decisions.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let decision = limiter.acquire(1).await;
                        assert!(decision.is_ok(), "{decision:?}");
                        decisions.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a task panicked");
        }
        let elapsed = started.elapsed().as_secs_f64();
        let after = limiter.stats();
        let errors = after.redis_errors - before.redis_errors;
        let total = decisions.load(Ordering::Relaxed);
        let by_redis = (after.allowed + after.limited) - (before.allowed + before.limited);
        let per_second = by_redis as f64 / elapsed;
        eprintln!(
            "redis limiter: {total} decisions ({by_redis} by redis, {errors} errors) in {elapsed:.2} s with {concurrency} tasks: {per_second:.0}/s"
        );
        report(&format!(
            r#"{{"decisions_per_s":{per_second:.1},"decisions":{by_redis},"errors":{errors},"seconds":{elapsed:.3},"concurrency":{concurrency},"limit":{},"window_us":{},"permits":1}}"#,
            config.global_per_second,
            config.global_window_ms * 1000
        ));
    });
}
