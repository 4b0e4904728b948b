//! What every [`SpendLedger`] backend must do, written once: each case takes a fresh,
//! empty ledger. [`spend_contract_tests!`](crate::spend_contract_tests) expands to one
//! `#[test]` per case for a factory: an async fn returning `Option<ContractSpend>`
//! (`None` skips the case, for a backend whose server is absent).
//!
//! The rules: spend is kept per billing period and per client, the unnamed client
//! (`None`) being one of them; every amount added lands, exactly to the millionth, also
//! when several callers add to one client at once; a call lands whole or not at all; a
//! client with nothing added in a period is absent from it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::clock::BillingPeriod;
use crate::ids::ClientId;
use crate::ledger::SpendLedger;
use crate::money::Money;
use crate::testing::ContractBackend;

/// A spend ledger under test, and whatever must live as long as it does.
pub type ContractSpend = ContractBackend<dyn SpendLedger>;

fn client(name: &str) -> Option<ClientId> {
    Some(ClientId::new(name).expect("a valid client"))
}

fn period(label: &str) -> BillingPeriod {
    BillingPeriod::from_label(label)
}

fn money(text: &str) -> Money {
    text.parse().expect("a valid amount")
}

/// What was added reads back; several amounts for one client in one call add up, and
/// later calls add to them.
pub async fn added_spend_reads_back(ledger: &Arc<dyn SpendLedger>) {
    let march = period("2026-03");
    assert!(ledger.spend(&march).await.unwrap().is_empty());
    ledger
        .add_spend(
            &march,
            &[
                (client("shop"), money("0.045")),
                (client("shop"), money("0.045")),
                (client("auth"), money("0.0365")),
            ],
        )
        .await
        .unwrap();
    ledger
        .add_spend(&march, &[(client("shop"), money("1.5"))])
        .await
        .unwrap();
    ledger.add_spend(&march, &[]).await.unwrap();
    assert_eq!(
        ledger.spend(&march).await.unwrap(),
        BTreeMap::from([
            (client("auth"), money("0.0365")),
            (client("shop"), money("1.59")),
        ])
    );
}

/// Spend in one period leaves every other period as it was.
pub async fn periods_are_kept_apart(ledger: &Arc<dyn SpendLedger>) {
    let (march, april, may) = (period("2026-03"), period("2026-04"), period("2026-05"));
    ledger
        .add_spend(&march, &[(client("shop"), money("2"))])
        .await
        .unwrap();
    ledger
        .add_spend(&april, &[(client("shop"), money("3")), (None, money("1"))])
        .await
        .unwrap();
    assert_eq!(
        ledger.spend(&march).await.unwrap(),
        BTreeMap::from([(client("shop"), money("2"))])
    );
    assert_eq!(
        ledger.spend(&april).await.unwrap(),
        BTreeMap::from([(None, money("1")), (client("shop"), money("3"))])
    );
    assert!(ledger.spend(&may).await.unwrap().is_empty());
}

/// Each client's spend is its own, the unnamed client's too, whatever its neighbours'
/// names.
pub async fn clients_are_kept_apart(ledger: &Arc<dyn SpendLedger>) {
    let march = period("2026-03");
    ledger
        .add_spend(
            &march,
            &[
                (None, money("0.5")),
                (client("a"), money("0.01")),
                (client("a-b"), money("0.02")),
                (client("a_b"), money("0.03")),
            ],
        )
        .await
        .unwrap();
    ledger
        .add_spend(
            &march,
            &[(None, money("0.25")), (client("ab"), money("0.04"))],
        )
        .await
        .unwrap();
    assert_eq!(
        ledger.spend(&march).await.unwrap(),
        BTreeMap::from([
            (None, money("0.75")),
            (client("a"), money("0.01")),
            (client("a-b"), money("0.02")),
            (client("a_b"), money("0.03")),
            (client("ab"), money("0.04")),
        ])
    );
}

/// Adds from many tasks at once, to the same clients in the same order and in
/// opposite orders, all land.
pub async fn concurrent_adds_all_land(ledger: &Arc<dyn SpendLedger>) {
    const TASKS: i64 = 8;
    const ADDS: i64 = 25;
    let march = period("2026-03");
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (ledger, march) = (ledger.clone(), march.clone());
            tokio::spawn(async move {
                for _ in 0..ADDS {
                    let mut amounts = vec![
                        (client("shop"), Money::from_micros(45_000)),
                        (None, Money::from_micros(1)),
                        (client("auth"), Money::from_micros(36_500)),
                    ];
                    // Half the tasks name the clients the other way round.
                    if task % 2 == 1 {
                        amounts.reverse();
                    }
                    ledger.add_spend(&march, &amounts).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let adds = TASKS * ADDS;
    assert_eq!(
        ledger.spend(&march).await.unwrap(),
        BTreeMap::from([
            (None, Money::from_micros(adds)),
            (client("auth"), Money::from_micros(36_500 * adds)),
            (client("shop"), Money::from_micros(45_000 * adds)),
        ]),
        "every add landed once"
    );
}

/// Amounts are kept exactly to the millionth, also past the 2⁵³ millionths a float
/// would round.
pub async fn amounts_are_exact_to_the_millionth(ledger: &Arc<dyn SpendLedger>) {
    let march = period("2026-03");
    for _ in 0..3 {
        ledger
            .add_spend(
                &march,
                &[
                    (client("tiny"), money("0.000001")),
                    (client("tenth"), money("0.1")),
                ],
            )
            .await
            .unwrap();
    }
    // 4 × 10¹⁸ millionths, then one more: a float reading this back loses the one.
    let large = Money::from_micros(4_000_000_000_000_000_000);
    ledger
        .add_spend(&march, &[(client("large"), large)])
        .await
        .unwrap();
    ledger
        .add_spend(&march, &[(client("large"), Money::from_micros(1))])
        .await
        .unwrap();
    assert_eq!(
        ledger.spend(&march).await.unwrap(),
        BTreeMap::from([
            (
                client("large"),
                Money::from_micros(4_000_000_000_000_000_001)
            ),
            (client("tenth"), money("0.3")),
            (client("tiny"), money("0.000003")),
        ])
    );
}

/// An add that would take a total past what the ledger can hold is refused whole: the
/// call's other amounts do not land either.
pub async fn an_add_that_overflows_changes_nothing(ledger: &Arc<dyn SpendLedger>) {
    let march = period("2026-03");
    let near_max = Money::from_micros(i64::MAX - 10);
    ledger
        .add_spend(&march, &[(client("shop"), near_max), (None, money("1"))])
        .await
        .unwrap();
    let refused = ledger
        .add_spend(
            &march,
            &[(None, money("2")), (client("shop"), Money::from_micros(11))],
        )
        .await;
    assert!(refused.is_err(), "an overflowing add is refused");
    assert!(
        ledger
            .add_spend(
                &march,
                &[
                    (client("auth"), Money::from_micros(i64::MAX)),
                    (client("auth"), Money::from_micros(1))
                ],
            )
            .await
            .is_err(),
        "amounts of one call that overflow together are refused"
    );
    assert_eq!(
        ledger.spend(&march).await.unwrap(),
        BTreeMap::from([(None, money("1")), (client("shop"), near_max)]),
        "nothing of the refused adds landed"
    );
}

/// One `#[test]` per case of the spend ledger contract, for the factory `$factory` (an
/// async fn returning `Option<ContractSpend>`).
#[macro_export]
macro_rules! spend_contract_tests {
    ($factory:path) => {
        $crate::spend_contract_tests!(@cases $factory;
            added_spend_reads_back,
            periods_are_kept_apart,
            clients_are_kept_apart,
            concurrent_adds_all_land,
            amounts_are_exact_to_the_millionth,
            an_add_that_overflows_changes_nothing,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testing::store_contract::run(async {
                    let Some(ledger) = $factory().await else {
                        return;
                    };
                    $crate::testing::spend_contract::$case(&ledger.backend).await;
                });
            }
        )*
    };
}

#[cfg(test)]
mod memory {
    use std::sync::Arc;

    use super::ContractSpend;
    use crate::testing::MemorySpendLedger;

    async fn memory_spend() -> Option<ContractSpend> {
        Some(ContractSpend::new(Arc::new(MemorySpendLedger::new())))
    }

    crate::spend_contract_tests!(memory_spend);
}
