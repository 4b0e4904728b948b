//! What every [`Blocklist`] backend must do, written once: each case takes a fresh,
//! empty blocklist. [`blocklist_contract_tests!`](crate::blocklist_contract_tests)
//! expands to one `#[test]` per case for a factory: an async fn returning
//! `Option<ContractBlocklist>` (`None` skips the case, for a backend whose server is
//! absent).
//!
//! The rules: a number is blocked once, and its first entry (reason and time) stays
//! until it is unblocked; an entry reads back as written, its time to the microsecond;
//! a look-up of many numbers answers each blocked one once, in the order given; every
//! call is atomic, so concurrent blocks of one number block it once.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::blocklist::{BlockReason, BlockedNumber, Blocklist};
use crate::phone::PhoneNumber;
use crate::testing::ContractBackend;
use crate::testing::store_contract::fixtures::at;

/// A blocklist under test, and whatever must live as long as it does.
pub type ContractBlocklist = ContractBackend<dyn Blocklist>;

fn number(n: &str) -> PhoneNumber {
    PhoneNumber::parse(n).expect("a valid number")
}

/// `secs` seconds and `micros` microseconds after the fixtures' start: a time with a
/// fraction, which a backend keeping whole seconds or milliseconds would not return.
fn at_micros(secs: i64, micros: i64) -> DateTime<Utc> {
    at(secs) + chrono::Duration::microseconds(micros)
}

/// Blocking a blocked number answers `false` and keeps the first entry's reason and
/// time.
pub async fn blocking_twice_keeps_the_first_entry(blocklist: &Arc<dyn Blocklist>) {
    let n = number("+8613800000001");
    assert!(
        blocklist
            .block(&n, BlockReason::OptedOut, at(1))
            .await
            .unwrap(),
        "a new number is newly blocked"
    );
    assert!(
        !blocklist
            .block(&n, BlockReason::Operator, at(50))
            .await
            .unwrap(),
        "a blocked number is not blocked again"
    );
    assert_eq!(
        blocklist.entry(&n).await.unwrap(),
        Some(BlockedNumber {
            number: n.clone(),
            reason: BlockReason::OptedOut,
            since: at(1),
        }),
        "the first entry stays"
    );
    assert_eq!(blocklist.count().await.unwrap(), 1);
}

/// Unblocking answers whether the number was blocked; an unblocked number has no entry
/// and can be blocked afresh.
pub async fn unblocking_answers_whether_the_number_was_blocked(blocklist: &Arc<dyn Blocklist>) {
    let n = number("+8613800000002");
    assert!(
        !blocklist.unblock(&n).await.unwrap(),
        "a number never blocked"
    );
    blocklist
        .block(&n, BlockReason::Operator, at(1))
        .await
        .unwrap();
    assert!(blocklist.unblock(&n).await.unwrap());
    assert!(!blocklist.unblock(&n).await.unwrap(), "unblocked already");
    assert_eq!(blocklist.entry(&n).await.unwrap(), None);
    assert!(
        blocklist
            .block(&n, BlockReason::OptedOut, at(9))
            .await
            .unwrap(),
        "an unblocked number is blocked afresh"
    );
    assert_eq!(
        blocklist
            .entry(&n)
            .await
            .unwrap()
            .map(|e| (e.reason, e.since)),
        Some((BlockReason::OptedOut, at(9)))
    );
}

/// A look-up of many numbers answers the blocked ones in the order given: none, some,
/// all, each once when given twice, nothing for an empty list.
pub async fn blocked_among_answers_in_the_given_order(blocklist: &Arc<dyn Blocklist>) {
    let [a, b, c, d, e] = [
        "+8613800000011",
        "+8613800000012",
        "+8613800000013",
        "+8613800000014",
        "+8613800000015",
    ]
    .map(number);
    assert!(blocklist.blocked_among(&[]).await.unwrap().is_empty());
    assert!(
        blocklist
            .blocked_among(&[a.clone(), b.clone()])
            .await
            .unwrap()
            .is_empty(),
        "nothing is blocked yet"
    );
    // Blocked in an order unlike the one asked in, so an answer in the table's or the
    // blocking's order shows.
    for n in [&d, &b, &e] {
        blocklist
            .block(n, BlockReason::OptedOut, at(1))
            .await
            .unwrap();
    }
    let given = [e.clone(), a.clone(), b.clone(), c.clone(), d.clone()];
    assert_eq!(
        blocklist.blocked_among(&given).await.unwrap(),
        [e.clone(), b.clone(), d.clone()],
        "the blocked ones, in the order given"
    );
    assert!(
        blocklist
            .blocked_among(&[c.clone(), a.clone()])
            .await
            .unwrap()
            .is_empty(),
        "none of these"
    );
    assert_eq!(
        blocklist
            .blocked_among(&[b.clone(), d.clone(), e.clone()])
            .await
            .unwrap(),
        [b.clone(), d.clone(), e.clone()],
        "all of these"
    );
    assert_eq!(
        blocklist
            .blocked_among(&[d.clone(), a.clone(), b.clone(), d.clone(), a.clone()])
            .await
            .unwrap(),
        [d, b],
        "a number given twice is answered once, where it first appears"
    );
}

/// The count and the list of numbers follow blocks and unblocks, repeats included.
pub async fn count_follows_blocks_and_unblocks(blocklist: &Arc<dyn Blocklist>) {
    assert_eq!(blocklist.count().await.unwrap(), 0);
    let numbers: Vec<PhoneNumber> = (0..5)
        .map(|i| number(&format!("+86138000001{i:02}")))
        .collect();
    for n in &numbers {
        blocklist
            .block(n, BlockReason::Operator, at(1))
            .await
            .unwrap();
    }
    blocklist
        .block(&numbers[0], BlockReason::OptedOut, at(2))
        .await
        .unwrap();
    assert_eq!(blocklist.count().await.unwrap(), 5);
    blocklist.unblock(&numbers[3]).await.unwrap();
    blocklist.unblock(&numbers[3]).await.unwrap();
    assert_eq!(blocklist.count().await.unwrap(), 4);
    let mut listed = blocklist.numbers().await.unwrap();
    listed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut expected: Vec<PhoneNumber> = numbers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, n)| n.clone())
        .collect();
    expected.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(listed, expected, "numbers lists exactly the blocked ones");
}

/// An entry reads back as written: number, each reason, and its time to the
/// microsecond.
pub async fn an_entry_reads_back_as_written(blocklist: &Arc<dyn Blocklist>) {
    let (opted, blocked) = (number("+8613800000021"), number("+14155550123"));
    let (since_opted, since_blocked) = (at_micros(3, 123_456), at_micros(-7_200, 999_999));
    blocklist
        .block(&opted, BlockReason::OptedOut, since_opted)
        .await
        .unwrap();
    blocklist
        .block(&blocked, BlockReason::Operator, since_blocked)
        .await
        .unwrap();
    assert_eq!(
        blocklist.entry(&opted).await.unwrap(),
        Some(BlockedNumber {
            number: opted,
            reason: BlockReason::OptedOut,
            since: since_opted,
        })
    );
    assert_eq!(
        blocklist.entry(&blocked).await.unwrap(),
        Some(BlockedNumber {
            number: blocked,
            reason: BlockReason::Operator,
            since: since_blocked,
        })
    );
    assert_eq!(
        blocklist.entry(&number("+8613800000022")).await.unwrap(),
        None,
        "a number never blocked has no entry"
    );
}

/// Blocks of one number at the same time newly block it once.
pub async fn concurrent_blocks_of_one_number_block_it_once(blocklist: &Arc<dyn Blocklist>) {
    let n = number("+8613800000031");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (blocklist, n) = (blocklist.clone(), n.clone());
            tokio::spawn(async move {
                blocklist
                    .block(&n, BlockReason::OptedOut, at(i))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut newly = 0;
    for task in tasks {
        newly += usize::from(task.await.unwrap());
    }
    assert_eq!(newly, 1, "exactly one block was new");
    assert_eq!(blocklist.count().await.unwrap(), 1);
}

/// One `#[test]` per case of the blocklist contract, for the factory `$factory` (an
/// async fn returning `Option<ContractBlocklist>`).
#[macro_export]
macro_rules! blocklist_contract_tests {
    ($factory:path) => {
        $crate::blocklist_contract_tests!(@cases $factory;
            blocking_twice_keeps_the_first_entry,
            unblocking_answers_whether_the_number_was_blocked,
            blocked_among_answers_in_the_given_order,
            count_follows_blocks_and_unblocks,
            an_entry_reads_back_as_written,
            concurrent_blocks_of_one_number_block_it_once,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testing::store_contract::run(async {
                    let Some(blocklist) = $factory().await else {
                        return;
                    };
                    $crate::testing::blocklist_contract::$case(&blocklist.backend).await;
                });
            }
        )*
    };
}

#[cfg(test)]
mod memory {
    use std::sync::Arc;

    use super::ContractBlocklist;
    use crate::testing::MemoryBlocklist;

    async fn memory_blocklist() -> Option<ContractBlocklist> {
        Some(ContractBlocklist::new(Arc::new(MemoryBlocklist::new())))
    }

    crate::blocklist_contract_tests!(memory_blocklist);
}
