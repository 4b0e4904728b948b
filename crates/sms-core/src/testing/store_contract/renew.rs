//! Renewing a lease: a sender that needs longer than its lease extends it, and only the
//! current holder can.

use std::sync::Arc;

use crate::ids::MessageId;
use crate::queue::{DeferredQueue, InitialState, Lease, LeaseToken, MessageStatus, StoredMessage};

use super::fixtures::{at, keyed_request, queued, queued_request};
use super::support::{
    LEASE, assert_lease_lost, assert_not_found, claim, claim_one, enqueue, get, token, vendor,
};

/// Renews `m`'s lease at `now_secs` for [`LEASE`]; the renewal must succeed.
async fn renew(queue: &Arc<dyn DeferredQueue>, m: &StoredMessage, now_secs: i64) -> Lease {
    queue
        .renew(m.id, token(m), LEASE, at(now_secs))
        .await
        .unwrap()
}

/// Asserts that renewing `id` under `stale` was refused as `LeaseLost`.
async fn assert_renew_refused(queue: &Arc<dyn DeferredQueue>, id: MessageId, stale: LeaseToken) {
    let renewed = queue.renew(id, stale, LEASE, at(1_000)).await;
    assert_lease_lost(renewed.map(drop), id);
}

/// A renewal moves the lease's end to `lease_for` after now: a claim between the old
/// and the new end takes nothing, one at the new end takes the message. Nothing but the
/// lease (and the time of the change) moves: not the attempts, the status, the due
/// time or the duplicate flag.
pub async fn renew_extends_so_a_claim_before_the_new_expiry_takes_nothing(
    queue: &Arc<dyn DeferredQueue>,
) {
    let mut new = queued(at(0), at(0));
    new.attempts = 1;
    new.may_duplicate = true;
    let m = enqueue(queue, new).await;
    let claimed = claim_one(queue, 10).await;
    assert_eq!(claimed.lease.as_ref().unwrap().expires_at, at(40));

    let renewed = renew(queue, &claimed, 35).await;
    let held = claimed.lease.clone().unwrap();
    assert_eq!(
        renewed,
        Lease {
            expires_at: at(65),
            ..held
        }
    );
    let stored = get(queue, m.id).await;
    assert_eq!(
        stored,
        StoredMessage {
            lease: Some(renewed.clone()),
            updated_at: at(35),
            ..claimed.clone()
        },
        "only the lease and the time of the change move"
    );
    assert_eq!(stored.attempts, 2);
    assert!(stored.may_duplicate);
    assert_eq!(stored.next_attempt_at, at(0));

    // Past the old end, before the new one: still held.
    assert!(claim(queue, "rescuer", 50, 10).await.is_empty());
    assert!(claim(queue, "rescuer", 64, 10).await.is_empty());
    // The renewed lease lapses like any other.
    let rescued = claim(queue, "rescuer", 65, 10).await;
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].id, m.id);
    assert_eq!(rescued[0].attempts, 3);
    assert_ne!(token(&rescued[0]), renewed.token);
}

/// A lapsed lease nobody claimed since is still its holder's to renew, and the renewal
/// holds off claimers again.
pub async fn renew_of_a_lapsed_lease_not_yet_reclaimed_holds_it_again(
    queue: &Arc<dyn DeferredQueue>,
) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 0).await;
    let renewed = renew(queue, &claimed, 100).await;
    assert_eq!(renewed.expires_at, at(130));
    assert_eq!(renewed.token, token(&claimed));
    assert!(claim(queue, "rescuer", 129, 10).await.is_empty());
    queue
        .complete(m.id, renewed.token, &vendor("aliyun"), at(129))
        .await
        .unwrap();
    assert_eq!(get(queue, m.id).await.status, MessageStatus::Sent);
}

/// A message stored already leased (a keyed send attempting it now) is renewed under
/// the token it was stored with.
pub async fn renew_extends_a_lease_stored_with_the_message(queue: &Arc<dyn DeferredQueue>) {
    let lease = Lease {
        owner: "api-1".to_owned(),
        token: LeaseToken::new(),
        expires_at: at(30),
    };
    let mut new = queued_request(keyed_request("renew-1"), at(0), at(0));
    new.initial = InitialState::Leased(lease.clone());
    new.attempts = 1;
    let m = enqueue(queue, new).await;
    let renewed = queue.renew(m.id, lease.token, LEASE, at(20)).await.unwrap();
    assert_eq!(
        renewed,
        Lease {
            expires_at: at(50),
            ..lease
        }
    );
    assert!(claim(queue, "drainer", 49, 10).await.is_empty());
    assert_eq!(claim(queue, "drainer", 50, 10).await.len(), 1);
}

/// Once another claimer took the message, the old holder's renewal is refused and
/// changes nothing; the new holder's goes through.
pub async fn renew_with_a_stale_token_after_another_claim_is_lease_lost(
    queue: &Arc<dyn DeferredQueue>,
) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let first = claim(queue, "crashed", 10, 1).await.remove(0);
    let second = claim(queue, "rescuer", 40, 10).await.remove(0);
    assert_eq!(second.id, m.id);

    assert_renew_refused(queue, m.id, token(&first)).await;
    assert_eq!(
        get(queue, m.id).await,
        second,
        "a refused renewal changes nothing"
    );

    let renewed = renew(queue, &second, 60).await;
    assert_eq!(renewed.owner, "rescuer");
    assert_eq!(renewed.expires_at, at(90));
}

/// A message no longer leased (sent, or given back to the queue) has no lease to renew,
/// and an unknown id is not found.
pub async fn renew_of_a_message_no_longer_leased_is_refused(queue: &Arc<dyn DeferredQueue>) {
    let sent = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 1).await;
    queue
        .complete(sent.id, token(&claimed), &vendor("tencent"), at(2))
        .await
        .unwrap();
    let before = get(queue, sent.id).await;
    assert_renew_refused(queue, sent.id, token(&claimed)).await;
    assert_eq!(get(queue, sent.id).await, before, "still sent, no lease");

    let released = enqueue(queue, queued(at(10), at(10))).await;
    let claimed = claim_one(queue, 10).await;
    queue
        .release(released.id, token(&claimed), at(11))
        .await
        .unwrap();
    assert_renew_refused(queue, released.id, token(&claimed)).await;
    assert_eq!(get(queue, released.id).await.status, MessageStatus::Queued);

    let unknown = MessageId::new();
    assert_not_found(
        queue.renew(unknown, LeaseToken::new(), LEASE, at(0)).await,
        unknown,
    );
}
