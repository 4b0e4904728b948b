//! Helpers the cases share: claiming with the suite's lease, reading back, and
//! asserting the store's refusals.

use std::sync::Arc;
use std::time::Duration;

use crate::error::StoreError;
use crate::ids::{MessageId, VendorId};
use crate::queue::{
    AttemptFailure, DeferredQueue, Enqueued, LeaseToken, NewMessage, StoredMessage,
};

use super::fixtures::at;

/// The lease every claim of the cases takes.
pub(super) const LEASE: Duration = Duration::from_secs(30);

/// The vendor named `name`.
pub(super) fn vendor(name: &str) -> VendorId {
    VendorId::new(name).unwrap()
}

/// A failed attempt before any vendor was tried, that cannot have been delivered.
pub(super) fn failure(error: &str) -> AttemptFailure {
    AttemptFailure {
        vendor: None,
        error: error.to_owned(),
        may_duplicate: false,
        pinned: false,
    }
}

/// A failed attempt at `vendor_name`, that cannot have been delivered.
pub(super) fn vendor_failure(vendor_name: &str, error: &str) -> AttemptFailure {
    AttemptFailure {
        vendor: Some(vendor(vendor_name)),
        ..failure(error)
    }
}

/// The message an enqueue created; panics when it found an existing one.
pub(super) fn created(outcome: Enqueued) -> StoredMessage {
    match outcome {
        Enqueued::Created(m) => m,
        Enqueued::Existing(m) => panic!("expected a new row, found existing {}", m.id),
    }
}

/// Enqueues `m`, which must be new.
pub(super) async fn enqueue(queue: &Arc<dyn DeferredQueue>, m: NewMessage) -> StoredMessage {
    created(queue.enqueue(m).await.unwrap())
}

/// The stored message `id`, which must exist.
pub(super) async fn get(queue: &Arc<dyn DeferredQueue>, id: MessageId) -> StoredMessage {
    queue.get(id).await.unwrap().expect("message is stored")
}

/// Claims up to `limit` messages for `owner` at `now_secs` under [`LEASE`].
pub(super) async fn claim(
    queue: &Arc<dyn DeferredQueue>,
    owner: &str,
    now_secs: i64,
    limit: u32,
) -> Vec<StoredMessage> {
    queue
        .claim(owner, at(now_secs), LEASE, limit)
        .await
        .unwrap()
}

/// Claims exactly one message at `now_secs`.
pub(super) async fn claim_one(queue: &Arc<dyn DeferredQueue>, now_secs: i64) -> StoredMessage {
    let mut claimed = claim(queue, "drainer-a", now_secs, 1).await;
    assert_eq!(claimed.len(), 1, "expected one due message at +{now_secs}s");
    claimed.remove(0)
}

/// The token of a claimed message's lease.
pub(super) fn token(m: &StoredMessage) -> LeaseToken {
    m.lease.as_ref().expect("claimed message has a lease").token
}

/// The ids of `messages`, in order.
pub(super) fn ids(messages: &[StoredMessage]) -> Vec<MessageId> {
    messages.iter().map(|m| m.id).collect()
}

/// Asserts that a change of `id` was refused as `LeaseLost`.
pub(super) fn assert_lease_lost(result: Result<(), StoreError>, id: MessageId) {
    match result {
        Err(StoreError::LeaseLost(lost)) => assert_eq!(lost, id),
        other => panic!("expected LeaseLost({id}), found {other:?}"),
    }
}

/// Asserts that an operation on `id` was refused as `NotFound`.
pub(super) fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, id: MessageId) {
    match result {
        Err(StoreError::NotFound(missing)) => assert_eq!(missing, id),
        other => panic!("expected NotFound({id}), found {other:?}"),
    }
}
