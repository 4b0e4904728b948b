//! The usage ledger: running totals per vendor and billing period, exact under
//! concurrency.

use std::collections::HashSet;
use std::sync::Arc;

use crate::clock::BillingPeriod;
use crate::ledger::UsageLedger;

use super::support::vendor;

fn period(label: &str) -> BillingPeriod {
    BillingPeriod::from_label(label)
}

/// `add` returns the running total of the vendor in the period.
pub async fn ledger_add_returns_the_running_total(ledger: &Arc<dyn UsageLedger>) {
    let aliyun = vendor("aliyun");
    let march = period("2026-03");
    assert!(ledger.totals(&march).await.unwrap().is_empty());
    assert_eq!(ledger.add(&aliyun, &march, 3).await.unwrap(), 3);
    assert_eq!(ledger.add(&aliyun, &march, 5).await.unwrap(), 8);
    // Counted per billed message: one request to 1000 numbers adds 1000.
    assert_eq!(ledger.add(&aliyun, &march, 1_000).await.unwrap(), 1_008);
    assert_eq!(
        ledger.totals(&march).await.unwrap().get(&aliyun),
        Some(&1_008)
    );
}

/// Each vendor and each period has a total of its own.
pub async fn ledger_periods_and_vendors_are_separate(ledger: &Arc<dyn UsageLedger>) {
    let (aliyun, tencent) = (vendor("aliyun"), vendor("tencent"));
    let (march, april) = (period("2026-03"), period("2026-04"));
    ledger.add(&aliyun, &march, 10).await.unwrap();
    ledger.add(&tencent, &march, 20).await.unwrap();
    // A new period starts from zero.
    assert_eq!(ledger.add(&aliyun, &april, 1).await.unwrap(), 1);
    let totals = ledger.totals(&march).await.unwrap();
    assert_eq!(totals.len(), 2);
    assert_eq!(totals[&aliyun], 10);
    assert_eq!(totals[&tencent], 20);
    let totals = ledger.totals(&april).await.unwrap();
    assert_eq!(totals.into_iter().collect::<Vec<_>>(), [(aliyun, 1)]);
    assert!(ledger.totals(&period("2026-05")).await.unwrap().is_empty());
}

/// Increments from fifty tasks at once sum exactly, each seeing its own total.
pub async fn ledger_increments_from_50_concurrent_tasks_sum_exactly(ledger: &Arc<dyn UsageLedger>) {
    let cloopen = vendor("cloopen");
    let march = period("2026-03");
    let mut tasks = Vec::new();
    for task in 0..50_u64 {
        let ledger = Arc::clone(ledger);
        let (vendor, period) = (cloopen.clone(), march.clone());
        tasks.push(tokio::spawn(async move {
            let mut totals = Vec::new();
            for _ in 0..10 {
                totals.push(ledger.add(&vendor, &period, task % 7 + 1).await.unwrap());
            }
            totals
        }));
    }
    let mut running_totals = Vec::new();
    for task in tasks {
        running_totals.extend(task.await.unwrap());
    }
    let expected: u64 = (0..50_u64).map(|t| (t % 7 + 1) * 10).sum();
    assert_eq!(ledger.totals(&march).await.unwrap()[&cloopen], expected);
    // Each add saw its own total: no two increments were applied as one.
    let distinct: HashSet<_> = running_totals.iter().collect();
    assert_eq!(distinct.len(), running_totals.len());
    assert_eq!(running_totals.iter().max(), Some(&expected));
}
