//! Price tiers follow the whole deployment's billed volume: an instance sees what the
//! others billed, not only its own sends.

use std::sync::Arc;
use std::time::Duration;

use sms_core::testing::{ManualClock, MemoryLedger, MemoryQueue};
use sms_failover::{Gateway, VendorEntry};

use crate::support::{AllowAll, FakeVendor, config, flat, request_to, start};

fn instance(ledger: Arc<MemoryLedger>) -> Arc<Gateway> {
    Arc::new(
        Gateway::builder(
            vec![VendorEntry {
                vendor: FakeVendor::new("aliyun"),
                fees: flat(40_000),
            }],
            Arc::new(AllowAll::default()),
            Arc::new(MemoryQueue::new()),
            ledger,
        )
        .clock(Arc::new(ManualClock::new(start())))
        .config(config())
        .build()
        .unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn an_idle_instance_sees_the_others_billed_volume_within_seconds() {
    let ledger = Arc::new(MemoryLedger::new());
    let idle = instance(ledger.clone());
    let busy = instance(ledger);
    idle.init().await.unwrap();
    busy.init().await.unwrap();
    let drainer = idle.start_drainer();
    for _ in 0..10 {
        busy.send(request_to(10)).await.unwrap();
    }
    busy.flush().await.unwrap();
    assert_eq!(busy.vendors()[0].billed_this_period, 100);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        idle.vendors()[0].billed_this_period,
        100,
        "the idle instance prices with the deployment's volume"
    );
    drainer.shutdown().await;
}
