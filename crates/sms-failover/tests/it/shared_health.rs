//! One vendor health for a deployment: four gateways on one board switch once, on the
//! N-th failure anywhere; an operator's switch-off reaches all; a cut board leaves each
//! on its own health and they rejoin; one probe at a time; prices follow the ledger.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sms_core::VendorId;
use sms_core::testing::{MemoryBoard, MemoryLedger};
use sms_failover::{FailoverConfig, GatewayEvent, SharingHandle};

use crate::support::*;

const N: u32 = 3;

fn shared_config(i: usize) -> FailoverConfig {
    FailoverConfig {
        instance_id: format!("instance-{i}"),
        consecutive_failures: N,
        ..config()
    }
}

struct Deployment {
    board: Arc<MemoryBoard>,
    instances: Vec<Harness>,
    sharing: Vec<SharingHandle>,
}

impl Deployment {
    /// `n` instances over a cheap aliyun and a dearer tencent, joined on one board.
    async fn start(n: usize, config: impl Fn(usize) -> FailoverConfig) -> Self {
        let board = Arc::new(MemoryBoard::new());
        let ledger = Arc::new(MemoryLedger::new());
        let mut instances = Vec::new();
        let mut sharing = Vec::new();
        for i in 0..n {
            let h = Harness::on_board(
                &["aliyun", "tencent"],
                vec![flat(40_000), flat(45_000)],
                config(i),
                board.clone(),
                ledger.clone(),
            );
            h.gateway.init().await.unwrap();
            sharing.push(h.gateway.start_sharing().expect("a gateway with a board"));
            instances.push(h);
        }
        let deployment = Self {
            board,
            instances,
            sharing,
        };
        deployment
            .wait_for("every instance to join the board", |d| d.all_joined(true))
            .await;
        deployment
    }

    fn all_joined(&self, joined: bool) -> bool {
        self.instances
            .iter()
            .all(|h| h.gateway.belief().is_some_and(|b| b.shared == joined))
    }

    fn currents(&self) -> Vec<String> {
        self.instances.iter().map(Harness::current).collect()
    }

    /// Why each instance switched, every switch of every instance.
    fn switch_reasons(&self) -> Vec<String> {
        self.instances
            .iter()
            .flat_map(|h| h.events.events())
            .filter_map(|e| match e {
                GatewayEvent::Switched { reason, .. } => Some(reason),
                _ => None,
            })
            .collect()
    }

    fn calls_to(&self, vendor: &str) -> usize {
        self.instances
            .iter()
            .map(|h| h.vendor(vendor).calls())
            .sum()
    }

    /// Waits up to 5 s for `done`; returns how long it took.
    async fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) -> Duration {
        let started = Instant::now();
        while !done(self) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "timed out waiting for {what}: currents {:?}",
                self.currents()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        started.elapsed()
    }

    async fn stop(self) {
        for handle in self.sharing {
            handle.shutdown().await;
        }
    }
}

/// One send from each instance in turn, a few milliseconds apart, until every
/// instance has sent `rounds` times.
async fn round_robin(instances: &[Harness], rounds: usize) {
    for _ in 0..rounds {
        for h in instances {
            h.gateway.send(request()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_switch_once_on_the_nth_failure_anywhere() {
    let d = Deployment::start(4, shared_config).await;
    for h in &d.instances {
        h.vendor("aliyun").always(transient());
    }
    round_robin(&d.instances, 3).await;
    assert_eq!(
        d.calls_to("aliyun"),
        N as usize,
        "the deployment stops sending to aliyun after N failures in all"
    );
    d.wait_for("every instance to switch", |d| {
        d.currents().iter().all(|c| c == "tencent")
    })
    .await;
    let reasons = d.switch_reasons();
    assert_eq!(reasons.len(), 4, "each instance switched once: {reasons:?}");
    let deciding = reasons.iter().filter(|r| !r.contains("decided by")).count();
    assert_eq!(
        deciding, 1,
        "one instance decided, the others followed: {reasons:?}"
    );
    d.stop().await;

    // The same traffic on instances that decide alone costs N failures each.
    let alone: Vec<Harness> = (0..4)
        .map(|i| Harness::new(&[("aliyun", 40_000), ("tencent", 45_000)], shared_config(i)))
        .collect();
    for h in &alone {
        h.vendor("aliyun").always(transient());
    }
    round_robin(&alone, 3).await;
    let failed: usize = alone.iter().map(|h| h.vendor("aliyun").calls()).sum();
    assert_eq!(failed, 4 * N as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_anywhere_resets_the_count_for_everyone() {
    let d = Deployment::start(2, shared_config).await;
    let (a, b) = (&d.instances[0], &d.instances[1]);
    for _ in 0..N - 1 {
        a.vendor("aliyun").then(transient());
        a.gateway.send(request()).await.unwrap();
    }
    d.wait_for("b to see a's failures", |_| {
        b.failures_of("aliyun") == N - 1
    })
    .await;
    b.gateway.send(request()).await.unwrap();
    d.wait_for("a to see b's success", |_| a.failures_of("aliyun") == 0)
        .await;
    a.vendor("aliyun").then(transient());
    a.gateway.send(request()).await.unwrap();
    assert_eq!(
        a.current(),
        "aliyun",
        "the count started again at the success"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disable_through_one_instance_takes_effect_on_all_within_a_second() {
    let d = Deployment::start(4, shared_config).await;
    let aliyun = VendorId::new("aliyun").unwrap();
    d.instances[2].gateway.disable(&aliyun).await.unwrap();
    let took = d
        .wait_for("every instance to leave the disabled vendor", |d| {
            d.instances
                .iter()
                .all(|h| h.current() == "tencent" && h.gateway.vendors()[0].disabled)
        })
        .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    d.instances[0].gateway.enable(&aliyun).await.unwrap();
    d.wait_for("every instance to see it enabled", |d| {
        d.instances.iter().all(|h| !h.gateway.vendors()[0].disabled)
    })
    .await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_board_leaves_each_instance_on_its_own_health_and_they_rejoin() {
    let d = Deployment::start(2, shared_config).await;
    let (a, b) = (&d.instances[0], &d.instances[1]);
    d.board.cut(true);
    d.wait_for("both to notice the cut", |d| d.all_joined(false))
        .await;
    // Alone, a counts its own failures and switches on its own.
    a.vendor("aliyun").always(transient());
    for _ in 0..N {
        a.gateway.send(request()).await.unwrap();
    }
    assert_eq!(a.current(), "tencent");
    assert_eq!(b.current(), "aliyun", "b decides alone meanwhile");
    b.gateway.send(request()).await.unwrap();
    assert_eq!(b.vendor("aliyun").calls(), 1, "b keeps sending");
    d.board.cut(false);
    let took = d
        .wait_for("both to rejoin and agree", |d| {
            d.all_joined(true) && d.currents().iter().all(|c| c == "tencent")
        })
        .await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_probe_at_a_time_across_the_deployment() {
    let d = Deployment::start(4, |i| FailoverConfig {
        probe_every: 1,
        cooldown: Duration::from_secs(30),
        ..shared_config(i)
    })
    .await;
    let aliyun = VendorId::new("aliyun").unwrap();
    d.instances[0].gateway.disable(&aliyun).await.unwrap();
    d.wait_for("all on tencent", |d| {
        d.currents().iter().all(|c| c == "tencent")
    })
    .await;
    for h in &d.instances {
        h.vendor("aliyun")
            .always(Step::OkAfter(Duration::from_millis(300)));
    }
    d.instances[0].gateway.enable(&aliyun).await.unwrap();
    d.wait_for("all to see aliyun enabled", |d| {
        d.instances.iter().all(|h| !h.gateway.vendors()[0].disabled)
    })
    .await;
    // Two sends at once on each instance: each would probe alone.
    let sends = d
        .instances
        .iter()
        .flat_map(|h| [h.gateway.send(request()), h.gateway.send(request_to(1))]);
    for outcome in futures_util::future::join_all(sends).await {
        outcome.unwrap();
    }
    assert_eq!(
        d.calls_to("aliyun"),
        1,
        "one probe of aliyun ran; every other send went to tencent"
    );
    assert_eq!(d.calls_to("tencent"), 7);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_prices_with_the_deployments_volume_within_a_second() {
    let board = Arc::new(MemoryBoard::new());
    let ledger = Arc::new(MemoryLedger::new());
    let tiers = || -> Vec<Arc<dyn sms_core::FeeSchedule>> {
        vec![
            Arc::new(Tiers(vec![(100, 40_000), (u64::MAX, 30_000)])),
            flat(45_000),
        ]
    };
    let instances: Vec<Harness> = (0..2)
        .map(|i| {
            Harness::on_board(
                &["aliyun", "tencent"],
                tiers(),
                shared_config(i),
                board.clone(),
                ledger.clone(),
            )
        })
        .collect();
    let mut sharing = Vec::new();
    for h in &instances {
        h.gateway.init().await.unwrap();
        sharing.push(h.gateway.start_sharing().unwrap());
    }
    let (busy, idle) = (&instances[0], &instances[1]);
    for _ in 0..10 {
        busy.gateway.send(request_to(10)).await.unwrap();
    }
    busy.gateway.flush().await.unwrap();
    let written = Instant::now();
    while idle.gateway.vendors()[0].price != sms_core::Money::from_micros(30_000) {
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "the idle instance still prices aliyun at {}",
            idle.gateway.vendors()[0].price
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for handle in sharing {
        handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_reaching_different_instances_are_judged_together() {
    let d = Deployment::start(2, |i| FailoverConfig {
        receipt_window: 50,
        min_delivery_rate: 0.9,
        ..shared_config(i)
    })
    .await;
    // 30 undelivered receipts reach each instance: neither sees a full window of 50,
    // the deployment sees 60.
    for h in &d.instances {
        let reports = crate::deliveries::sends_and_receipts(h, 30, |_| false).await;
        crate::deliveries::push(h, &reports).await;
    }
    d.wait_for("the deployment to leave aliyun on its receipts", |d| {
        d.currents().iter().all(|c| c == "tencent")
    })
    .await;
    let reasons = d.switch_reasons();
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("delivery rate 0.0% over the deployment's last")),
        "{reasons:?}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_that_lost_its_data_counts_a_failure_once() {
    let d = Deployment::start(2, shared_config).await;
    let a = &d.instances[0];
    // Redis restarted empty: the instances' copies say version n, the board 0.
    d.board.clear();
    a.vendor("aliyun").then(transient());
    a.gateway.send(request()).await.unwrap();
    assert_eq!(a.current(), "aliyun", "one failure does not switch");
    assert_eq!(a.failures_of("aliyun"), 1);
    d.wait_for("the board to hold the count again", |d| {
        d.board.peek().1.is_some_and(|doc| {
            let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
            doc["vendors"]["aliyun"]["consecutive_failures"] == 1
        })
    })
    .await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_a_vendor_keeps_what_the_board_says_of_it() {
    let board = Arc::new(MemoryBoard::new());
    let ledger = Arc::new(MemoryLedger::new());
    let three = Harness::on_board(
        &["aliyun", "tencent", "cloopen"],
        vec![flat(40_000), flat(45_000), flat(50_000)],
        shared_config(0),
        board.clone(),
        ledger.clone(),
    );
    let two = Harness::on_board(
        &["aliyun", "tencent"],
        vec![flat(40_000), flat(45_000)],
        shared_config(1),
        board.clone(),
        ledger,
    );
    let mut sharing = Vec::new();
    for h in [&three, &two] {
        h.gateway.init().await.unwrap();
        sharing.push(h.gateway.start_sharing().unwrap());
    }
    let cloopen = VendorId::new("cloopen").unwrap();
    three.gateway.disable(&cloopen).await.unwrap();
    // The instance without cloopen writes the board (a failure counted).
    tokio::time::sleep(Duration::from_millis(300)).await;
    two.vendor("aliyun").then(transient());
    two.gateway.send(request()).await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&board.peek().1.unwrap()).unwrap();
    assert_eq!(doc["vendors"]["aliyun"]["consecutive_failures"], 1, "{doc}");
    assert_eq!(doc["vendors"]["cloopen"]["disabled"], true, "{doc}");
    for handle in sharing {
        handle.shutdown().await;
    }
}
