//! Send-path overhead: `Gateway::send` over an instant in-memory vendor, the in-process
//! limiter and the in-memory queue and ledger, next to calling that vendor directly.
//!
//! Run with `cargo bench -p sms-failover --bench send_path` (or `cargo xtask bench`,
//! which reads the medians back from `target/criterion`). Each sample builds a fresh
//! gateway, so the in-memory queue (which records every sent message for look-ups)
//! holds one sample's messages at most and does not slow later samples down.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use sms_core::testing::{MemoryLedger, MemoryQueue};
use sms_core::{
    FeeSchedule, Money, OutboundSms, Receipt, SmsRequest, SystemClock, Vendor, VendorError,
    VendorId,
};
use sms_failover::{FailoverConfig, Gateway, SendOutcome, VendorEntry};
use sms_limit::InProcessLimiter;

/// A vendor that accepts everything at once and does no I/O.
struct InstantVendor {
    id: VendorId,
    sent: AtomicU64,
}

#[async_trait]
impl Vendor for InstantVendor {
    fn id(&self) -> VendorId {
        self.id.clone()
    }

    async fn send(&self, sms: &OutboundSms) -> Result<Receipt, VendorError> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(Receipt {
            vendor_message_id: String::new(),
            billed_messages: sms.request.recipients().len() as u64,
        })
    }
}

/// One price for every volume.
struct FlatFee;

impl FeeSchedule for FlatFee {
    fn price_at(&self, _billed_volume: u64) -> Money {
        "0.04".parse().expect("a valid price")
    }
}

fn instant_vendor(name: &str) -> Arc<InstantVendor> {
    Arc::new(InstantVendor {
        id: VendorId::new(name).expect("a valid vendor id"),
        sent: AtomicU64::new(0),
    })
}

fn gateway(vendor: Arc<InstantVendor>) -> Gateway {
    // A limit no benchmark reaches, over a short window so the limiter's log stays small.
    let limiter = InProcessLimiter::new(1_000_000, Duration::from_millis(10)).expect("limiter");
    Gateway::new(
        vec![VendorEntry {
            vendor,
            fees: Arc::new(FlatFee),
        }],
        Arc::new(limiter),
        None,
        Arc::new(MemoryQueue::new()),
        Arc::new(MemoryLedger::new()),
        Arc::new(SystemClock),
        FailoverConfig::default(),
    )
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
        let sms = OutboundSms {
            id: sms_core::MessageId::new(),
            request: request.clone(),
        };
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
