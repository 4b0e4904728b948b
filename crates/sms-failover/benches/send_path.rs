//! Send-path overhead: `Gateway::send` over an instant in-memory vendor, the in-process
//! limiter and the in-memory ledger, next to calling that vendor directly.
//!
//! - `gateway`: the gateway's own work. The records of sent messages, which the gateway
//!   hands to its store in batches behind the send, go to a store that drops them, so
//!   the figure is the gateway's and not a store's (the store's writes are measured in
//!   the `sms-store` benchmarks).
//! - `gateway_memory_queue`: the same with the in-memory queue of `sms-core`'s `testing`
//!   feature keeping every record (a hash map insert and a copy per message).
//!
//! Run with `cargo bench -p sms-failover --bench send_path` (or `cargo xtask bench`,
//! which reads the medians back from `target/criterion`). Each sample builds a fresh
//! gateway, so the in-memory queue holds one sample's messages at most and does not
//! slow later samples down.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use sms_core::testing::{MemoryLedger, MemoryQueue};
use sms_core::{
    AttemptFailure, DeferredQueue, Enqueued, FeeSchedule, IdempotencyKey, LeaseToken, MessageId,
    MessageStatus, Money, NewMessage, OutboundSms, QueueStats, Receipt, SmsRequest, StoreError,
    StoredMessage, SystemClock, Vendor, VendorError, VendorId,
};
use sms_failover::{FailoverConfig, Gateway, SendOutcome, VendorEntry};
use sms_limit::InProcessLimiter;

/// A vendor that accepts everything at once and does no I/O. It shares nothing between
/// threads: a counter that every send of every thread wrote would by itself keep the
/// two-thread baseline from scaling.
struct InstantVendor {
    id: VendorId,
}

#[async_trait]
impl Vendor for InstantVendor {
    fn id(&self) -> VendorId {
        self.id.clone()
    }

    async fn send(&self, sms: &OutboundSms) -> Result<Receipt, VendorError> {
        Ok(Receipt {
            vendor_message_id: String::new(),
            billed_messages: sms.request.recipients().len() as u64,
            reported_billed: None,
            recipient_ids: Vec::new(),
        })
    }
}

/// One price for every volume.
struct FlatFee;

impl FeeSchedule for FlatFee {
    fn price_at(&self, _billed_volume: u64) -> Money {
        Money::from_micros(40_000)
    }
}

fn instant_vendor(name: &str) -> Arc<InstantVendor> {
    Arc::new(InstantVendor {
        id: VendorId::new(name).expect("a valid vendor id"),
    })
}

/// A store that takes batches of records of sent messages and keeps nothing; the send
/// path calls nothing else.
struct DiscardingQueue;

fn unused() -> StoreError {
    StoreError::Backend("not used by the send-path benchmark".into())
}

#[async_trait]
impl DeferredQueue for DiscardingQueue {
    async fn enqueue(&self, _message: NewMessage) -> Result<Enqueued, StoreError> {
        Err(unused())
    }
    async fn enqueue_many(&self, _messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, StoreError> {
        Ok(Vec::new())
    }
    async fn claim(
        &self,
        _owner: &str,
        _now: DateTime<Utc>,
        _lease_for: Duration,
        _limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(Vec::new())
    }
    async fn complete(
        &self,
        _id: MessageId,
        _token: LeaseToken,
        _vendor: &VendorId,
        _now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Err(unused())
    }
    async fn fail(
        &self,
        _id: MessageId,
        _token: LeaseToken,
        _failure: AttemptFailure,
        _next_attempt_at: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Err(unused())
    }
    async fn dead(
        &self,
        _id: MessageId,
        _token: LeaseToken,
        _failure: AttemptFailure,
        _now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Err(unused())
    }
    async fn expire(
        &self,
        _id: MessageId,
        _token: LeaseToken,
        _now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Err(unused())
    }
    async fn release(
        &self,
        _id: MessageId,
        _token: LeaseToken,
        _now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Err(unused())
    }
    async fn retry(
        &self,
        _id: MessageId,
        _now: DateTime<Utc>,
    ) -> Result<StoredMessage, StoreError> {
        Err(unused())
    }
    async fn get(&self, _id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        Err(unused())
    }
    async fn find_by_idempotency_key(
        &self,
        _key: &IdempotencyKey,
    ) -> Result<Option<StoredMessage>, StoreError> {
        Err(unused())
    }
    async fn list(
        &self,
        _status: MessageStatus,
        _limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Err(unused())
    }
    async fn stats(&self) -> Result<QueueStats, StoreError> {
        Err(unused())
    }
    async fn purge_sent(&self, _before: DateTime<Utc>, _limit: u32) -> Result<u64, StoreError> {
        Err(unused())
    }
}

fn gateway(vendor: Arc<InstantVendor>) -> Gateway {
    gateway_over(vendor, Arc::new(DiscardingQueue))
}

fn gateway_over(vendor: Arc<InstantVendor>, queue: Arc<dyn DeferredQueue>) -> Gateway {
    // A limit no benchmark reaches, over a short window so the limiter's log stays small.
    let limiter = InProcessLimiter::new(1_000_000, Duration::from_millis(10)).expect("limiter");
    Gateway::builder(
        vec![VendorEntry {
            vendor,
            fees: Arc::new(FlatFee),
        }],
        Arc::new(limiter),
        queue,
        Arc::new(MemoryLedger::new()),
    )
    .clock(Arc::new(SystemClock))
    .config(FailoverConfig::default())
    .build()
    .expect("a valid gateway")
}

fn request() -> SmsRequest {
    SmsRequest::new("login", ["123456"], ["+8613800138000"]).expect("a valid request")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Sends `n` requests through the gateway on this thread's runtime. The gateway records
/// each sent message on a spawned task; yielding now and then lets those run, so their
/// cost is part of the figure instead of piling up.
async fn send_through_gateway(gateway: &Gateway, n: u64) {
    let request = request();
    for i in 0..n {
        let outcome = gateway.send(request.clone()).await;
        assert!(
            matches!(outcome, Ok(SendOutcome::Sent { .. })),
            "{outcome:?}"
        );
        if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    tokio::task::yield_now().await;
}

/// Sends `n` requests to the vendor directly: the same request clone and envelope the
/// gateway builds, without anything else.
async fn send_directly(vendor: &InstantVendor, n: u64) {
    let request = request();
    for _ in 0..n {
        let sms = OutboundSms::pass_through(sms_core::MessageId::new(), request.clone());
        let receipt = vendor.send(std::hint::black_box(&sms)).await;
        assert!(receipt.is_ok());
    }
}

/// Runs `iters` sends split over `threads` threads, each with its own current-thread
/// runtime, against one shared gateway (or the vendor alone); returns the wall time.
fn run_threads(threads: u64, iters: u64, through_gateway: bool) -> Duration {
    let vendor = instant_vendor("instant");
    let gateway = Arc::new(gateway(vendor.clone()));
    let barrier = Arc::new(std::sync::Barrier::new(threads as usize + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (vendor, gateway, barrier) = (vendor.clone(), gateway.clone(), barrier.clone());
            let share = iters / threads + u64::from(t < iters % threads);
            std::thread::spawn(move || {
                let rt = runtime();
                barrier.wait();
                rt.block_on(async {
                    if through_gateway {
                        send_through_gateway(&gateway, share).await;
                    } else {
                        send_directly(&vendor, share).await;
                    }
                });
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    for handle in handles {
        handle.join().expect("a sending thread panicked");
    }
    started.elapsed()
}

fn send_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("send_path");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    group.bench_function("vendor_direct", |b| {
        let rt = runtime();
        b.iter_custom(|iters| {
            let vendor = instant_vendor("instant");
            rt.block_on(async {
                let started = Instant::now();
                send_directly(&vendor, iters).await;
                started.elapsed()
            })
        });
    });

    group.bench_function("gateway", |b| {
        let rt = runtime();
        b.iter_custom(|iters| {
            let gateway = gateway(instant_vendor("instant"));
            rt.block_on(async {
                let started = Instant::now();
                send_through_gateway(&gateway, iters).await;
                started.elapsed()
            })
        });
    });

    group.bench_function("gateway_memory_queue", |b| {
        let rt = runtime();
        b.iter_custom(|iters| {
            let gateway = gateway_over(instant_vendor("instant"), Arc::new(MemoryQueue::new()));
            rt.block_on(async {
                let started = Instant::now();
                send_through_gateway(&gateway, iters).await;
                started.elapsed()
            })
        });
    });

    // Wall time per send with the sends split over threads sharing one gateway: with no
    // serialisation on shared state, two threads take half the time per send.
    for threads in [1, 2] {
        group.bench_function(format!("gateway_threads_{threads}"), |b| {
            b.iter_custom(|iters| run_threads(threads, iters, true));
        });
        group.bench_function(format!("vendor_direct_threads_{threads}"), |b| {
            b.iter_custom(|iters| run_threads(threads, iters, false));
        });
    }
    group.finish();
}

criterion_group!(benches, send_path);
criterion_main!(benches);
