//! What every [`SharedBoard`] backend must do, written once: each case takes a fresh,
//! empty board. [`board_contract_tests!`](crate::board_contract_tests) expands to one
//! `#[test]` per case for a factory: an async fn returning `Option<ContractBoard>`
//! (`None` skips the case, for a backend whose server is absent).
//!
//! The rules: a write lands only on the version it was worked out from, and a write
//! that lost gets the document that won; concurrent writers each land exactly once
//! when they retry on what they are given; a claim has one holder until released by
//! that holder or expired; reports expire; a write wakes those waiting for a change.

use std::sync::Arc;
use std::time::Duration;

use crate::board::{BoardWrite, SharedBoard};
use crate::testing::ContractBackend;

/// A board under test, and whatever must live as long as it does.
pub type ContractBoard = ContractBackend<dyn SharedBoard>;

/// An empty board reads as version 0 without a document; writes go 1, 2, … and a
/// write on a version that is not the board's changes nothing and returns the board's.
pub async fn writes_land_only_on_the_version_they_read(board: &Arc<dyn SharedBoard>) {
    let empty = board.read().await.unwrap();
    assert_eq!((empty.version, empty.doc), (0, None));
    let skew = (empty.now - chrono::Utc::now()).num_seconds().abs();
    assert!(skew < 60, "the board's clock is about now: {}", empty.now);
    assert_eq!(
        board.write(0, "first").await.unwrap(),
        BoardWrite::Written { version: 1 }
    );
    match board.write(0, "stale").await.unwrap() {
        BoardWrite::Conflict(read) => {
            assert_eq!((read.version, read.doc.as_deref()), (1, Some("first")));
        }
        other => panic!("a write on version 0 after version 1 must conflict: {other:?}"),
    }
    assert_eq!(
        board.write(1, "second").await.unwrap(),
        BoardWrite::Written { version: 2 }
    );
    let read = board.read().await.unwrap();
    assert_eq!((read.version, read.doc.as_deref()), (2, Some("second")));
}

/// Eight writers each add their mark to a list, retrying on what a conflict returns:
/// every mark is in the final document once, and the version counts every write.
pub async fn concurrent_writers_each_land_once(board: &Arc<dyn SharedBoard>) {
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let board = Arc::clone(board);
            tokio::spawn(async move {
                let read = board.read().await.unwrap();
                let (mut version, mut doc) = (read.version, read.doc.unwrap_or_default());
                loop {
                    let mine = format!("{doc}[{w}]");
                    match board.write(version, &mine).await.unwrap() {
                        BoardWrite::Written { .. } => return,
                        BoardWrite::Conflict(read) => {
                            version = read.version;
                            doc = read.doc.unwrap_or_default();
                        }
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let read = board.read().await.unwrap();
    assert_eq!(read.version, 8, "one version per write");
    let doc = read.doc.unwrap();
    for w in 0..8 {
        assert_eq!(doc.matches(&format!("[{w}]")).count(), 1, "{doc}");
    }
}

/// A claim has one holder: others are refused until the holder gives it back or it
/// expires; a release by someone else changes nothing.
pub async fn a_claim_has_one_holder_until_released_or_expired(board: &Arc<dyn SharedBoard>) {
    let ttl = Duration::from_secs(30);
    assert!(board.claim("probe:a", "one", ttl).await.unwrap());
    assert!(!board.claim("probe:a", "two", ttl).await.unwrap());
    assert!(
        board.claim("probe:a", "one", ttl).await.unwrap(),
        "the holder still has it"
    );
    assert!(
        board.claim("probe:b", "two", ttl).await.unwrap(),
        "claims are by name"
    );
    board.release("probe:a", "two").await.unwrap();
    assert!(
        !board.claim("probe:a", "two", ttl).await.unwrap(),
        "only the holder gives a claim back"
    );
    board.release("probe:a", "one").await.unwrap();
    assert!(board.claim("probe:a", "two", ttl).await.unwrap());
    assert!(
        board
            .claim("probe:c", "one", Duration::from_millis(100))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        board.claim("probe:c", "two", ttl).await.unwrap(),
        "an expired claim is free"
    );
}

/// Reports are kept per instance, the last one each, until they expire.
pub async fn reports_are_the_last_per_instance_until_they_expire(board: &Arc<dyn SharedBoard>) {
    let long = Duration::from_secs(30);
    board.report("a", "a-1", long).await.unwrap();
    board.report("a", "a-2", long).await.unwrap();
    board
        .report("b", "b-1", Duration::from_millis(100))
        .await
        .unwrap();
    let mut reports = board.reports().await.unwrap();
    reports.sort();
    assert_eq!(
        reports,
        [("a".into(), "a-2".into()), ("b".into(), "b-1".into())]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        board.reports().await.unwrap(),
        [("a".into(), "a-2".into())],
        "b's report expired"
    );
}

/// A write wakes a reader waiting for a change.
pub async fn a_write_wakes_those_waiting_for_a_change(board: &Arc<dyn SharedBoard>) {
    let waiter = {
        let board = Arc::clone(board);
        tokio::spawn(async move { board.changed().await })
    };
    // Writes until the waiter has woken: one written before it waits may be missed.
    let mut version = 0;
    for _ in 0..50 {
        if waiter.is_finished() {
            break;
        }
        if let BoardWrite::Written { version: v } = board.write(version, "x").await.unwrap() {
            version = v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("a write wakes the waiter")
        .unwrap();
}

/// Expands to one `#[test]` per case every [`SharedBoard`] backend must pass, each on a
/// fresh board from `$factory`: a path to an async fn returning `Option<ContractBoard>`
/// (`None` skips the case).
#[macro_export]
macro_rules! board_contract_tests {
    ($factory:path) => {
        $crate::board_contract_tests!(@cases $factory;
            writes_land_only_on_the_version_they_read,
            concurrent_writers_each_land_once,
            a_claim_has_one_holder_until_released_or_expired,
            reports_are_the_last_per_instance_until_they_expire,
            a_write_wakes_those_waiting_for_a_change,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testing::store_contract::run(async {
                    let Some(board) = $factory().await else {
                        return;
                    };
                    $crate::testing::board_contract::$case(&board.backend).await;
                });
            }
        )*
    };
}

#[cfg(test)]
mod memory {
    use std::sync::Arc;

    use super::ContractBoard;
    use crate::testing::MemoryBoard;

    async fn memory_board() -> Option<ContractBoard> {
        Some(ContractBoard::new(Arc::new(MemoryBoard::new())))
    }

    crate::board_contract_tests!(memory_board);
}
