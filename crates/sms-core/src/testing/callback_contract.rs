//! What every [`CallbackOutbox`] backend must do, written once: each case takes a fresh
//! outbox. [`callback_contract_tests!`](crate::callback_contract_tests) expands to one
//! `#[test]` per case for a factory: an async fn returning `Option<ContractOutbox>`
//! (`None` skips the case, for a backend whose server is absent).
//!
//! The rules: an event is stored once per id; a claim hands out due pending events,
//! oldest due first, each to one claimer at a time; a settle under a stale claim
//! changes nothing; a delivered or failed event is never handed out again; a retry
//! waits for its time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::callback::{
    CallbackCounts, CallbackEvent, CallbackOutbox, CallbackOutcome, CallbackStatus, StatusEvent,
};
use crate::callback_url::CallbackUrl;
use crate::ids::MessageId;
use crate::testing::ContractBackend;
use crate::testing::store_contract::fixtures::at;

/// An outbox under test, and whatever must live as long as it does.
pub type ContractOutbox = ContractBackend<dyn CallbackOutbox>;

const LEASE: Duration = Duration::from_secs(30);

/// An event made `secs` after the fixtures' start.
fn event(status: CallbackStatus, secs: i64) -> CallbackEvent {
    let url = CallbackUrl::new("https://app.example/sms-events").expect("a valid URL");
    StatusEvent::new(MessageId::new(), status, at(secs)).to_callback(&url, at(secs))
}

/// Events come out as they went in, due ones only, oldest first, each claim counting
/// as an attempt.
pub async fn claims_hand_out_due_events_oldest_first(outbox: &Arc<dyn CallbackOutbox>) {
    let (late, early, future) = (
        event(CallbackStatus::Sent, 5),
        event(CallbackStatus::Queued, 1),
        event(CallbackStatus::Delivered, 100),
    );
    outbox
        .enqueue(&[late.clone(), early.clone(), future.clone()])
        .await
        .unwrap();
    let claimed = outbox.claim("a", at(10), LEASE, 10).await.unwrap();
    let events: Vec<&CallbackEvent> = claimed.iter().map(|c| &c.event).collect();
    assert_eq!(
        events,
        [&early, &late],
        "due events, oldest first, exactly as stored"
    );
    assert!(claimed.iter().all(|c| c.attempts == 1));
    assert_ne!(claimed[0].token, claimed[1].token);
    for c in &claimed {
        let settled = outbox
            .settle(c.event.id, c.token, CallbackOutcome::Delivered, at(11))
            .await
            .unwrap();
        assert!(settled);
    }
    let more = outbox.claim("a", at(100), LEASE, 10).await.unwrap();
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].event, future);
}

/// Events of every status, a cancel and a spend warning (about no message) among them,
/// are stored and claimed exactly as they went in; a spend warning stored again, as
/// another instance would store it, is kept once.
pub async fn every_kind_of_event_comes_back_as_stored(outbox: &Arc<dyn CallbackOutbox>) {
    let url = CallbackUrl::new("https://ops.example/sms-events").expect("a valid URL");
    let mut events: Vec<CallbackEvent> = CallbackStatus::ALL
        .into_iter()
        .filter(|s| *s != CallbackStatus::SpendWarning)
        .map(|s| event(s, 1))
        .collect();
    let warning = |spent: &str| {
        crate::SpendWarning::new("shop", "2026-05", spent.into(), "5.00".into(), 0.8, at(2))
            .to_callback(&url, at(2))
    };
    events.push(warning("4.00"));
    outbox.enqueue(&events).await.unwrap();
    outbox.enqueue(&[warning("4.20")]).await.unwrap();
    let claimed = outbox.claim("a", at(10), LEASE, 20).await.unwrap();
    let mut got: Vec<CallbackEvent> = claimed.into_iter().map(|c| c.event).collect();
    got.sort_by_key(|e| e.status.as_str());
    events.sort_by_key(|e| e.status.as_str());
    assert_eq!(got, events, "one of each, the first warning kept");
    let warning = got
        .iter()
        .find(|e| e.status == CallbackStatus::SpendWarning)
        .expect("the warning");
    assert_eq!(warning.message_id, None);
    assert!(warning.body.contains("\"4.00\""), "{}", warning.body);
}

/// Storing an event id again keeps the first.
pub async fn enqueueing_an_event_again_keeps_one(outbox: &Arc<dyn CallbackOutbox>) {
    let first = event(CallbackStatus::Queued, 1);
    outbox.enqueue(std::slice::from_ref(&first)).await.unwrap();
    let again = CallbackEvent {
        body: "{}".to_owned(),
        ..first.clone()
    };
    outbox.enqueue(&[again]).await.unwrap();
    let claimed = outbox.claim("a", at(2), LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event, first);
    assert_eq!(
        outbox.counts().await.unwrap(),
        CallbackCounts {
            pending: 1,
            ..CallbackCounts::default()
        }
    );
}

/// A claimed event is nobody else's until its lease lapses; then it is claimed again,
/// and the old claim's settle is refused.
pub async fn a_lapsed_lease_is_claimed_again_and_the_old_claim_refused(
    outbox: &Arc<dyn CallbackOutbox>,
) {
    let e = event(CallbackStatus::Sent, 1);
    outbox.enqueue(std::slice::from_ref(&e)).await.unwrap();
    let first = outbox.claim("a", at(2), LEASE, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        outbox
            .claim("b", at(20), LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let second = outbox.claim("b", at(40), LEASE, 10).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempts, 2);
    assert!(
        !outbox
            .settle(e.id, first[0].token, CallbackOutcome::Delivered, at(41))
            .await
            .unwrap(),
        "a stale claim settles nothing"
    );
    assert_eq!(outbox.counts().await.unwrap().pending, 1);
    assert!(
        outbox
            .settle(e.id, second[0].token, CallbackOutcome::Delivered, at(42))
            .await
            .unwrap()
    );
}

/// Delivered and failed events are never handed out again, and are counted.
pub async fn settled_events_are_never_claimed_again(outbox: &Arc<dyn CallbackOutbox>) {
    let (ok, bad, open) = (
        event(CallbackStatus::Delivered, 1),
        event(CallbackStatus::Dead, 2),
        event(CallbackStatus::Expired, 3),
    );
    outbox
        .enqueue(&[ok.clone(), bad.clone(), open.clone()])
        .await
        .unwrap();
    let claimed = outbox.claim("a", at(5), LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let token = |id| claimed.iter().find(|c| c.event.id == id).unwrap().token;
    assert!(
        outbox
            .settle(ok.id, token(ok.id), CallbackOutcome::Delivered, at(6))
            .await
            .unwrap()
    );
    let failed = CallbackOutcome::Failed {
        error: "HTTP 500".to_owned(),
    };
    assert!(
        outbox
            .settle(bad.id, token(bad.id), failed.clone(), at(6))
            .await
            .unwrap()
    );
    assert!(
        !outbox
            .settle(ok.id, token(ok.id), failed, at(7))
            .await
            .unwrap(),
        "settled once, settled for good"
    );
    assert_eq!(
        outbox.counts().await.unwrap(),
        CallbackCounts {
            pending: 1,
            delivered: 1,
            failed: 1,
        }
    );
    let later = outbox.claim("a", at(1000), LEASE, 10).await.unwrap();
    let ids: Vec<uuid::Uuid> = later.iter().map(|c| c.event.id).collect();
    assert_eq!(ids, [open.id], "only the unsettled event comes back");
}

/// A retry is due at its time, not before, and costs its claim one attempt.
pub async fn a_retry_waits_for_its_time(outbox: &Arc<dyn CallbackOutbox>) {
    let e = event(CallbackStatus::Undelivered, 1);
    outbox.enqueue(std::slice::from_ref(&e)).await.unwrap();
    let claimed = outbox.claim("a", at(2), LEASE, 10).await.unwrap();
    let retry = CallbackOutcome::Retry {
        at: at(10),
        error: "connection refused".to_owned(),
    };
    assert!(
        outbox
            .settle(e.id, claimed[0].token, retry, at(3))
            .await
            .unwrap()
    );
    assert!(
        outbox
            .claim("a", at(9), LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = outbox.claim("a", at(10), LEASE, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
}

/// Claimers at the same time never get the same event.
pub async fn concurrent_claimers_never_share_an_event(outbox: &Arc<dyn CallbackOutbox>) {
    let events: Vec<CallbackEvent> = (0..40)
        .map(|i| event(CallbackStatus::Sent, i % 7))
        .collect();
    outbox.enqueue(&events).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let claimed = outbox
                        .claim(&format!("c{i}"), at(10), LEASE, 3)
                        .await
                        .unwrap();
                    if claimed.is_empty() {
                        return got;
                    }
                    got.extend(claimed.into_iter().map(|c| c.event.id));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for task in tasks {
        for id in task.await.unwrap() {
            assert!(seen.insert(id), "event {id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), events.len(), "every event was claimed");
}

/// Purge deletes settled events made before the cut, never pending ones.
pub async fn purge_deletes_old_settled_events_only(outbox: &Arc<dyn CallbackOutbox>) {
    let (old_done, old_open, new_done) = (
        event(CallbackStatus::Sent, 1),
        event(CallbackStatus::Queued, 2),
        event(CallbackStatus::Delivered, 50),
    );
    outbox
        .enqueue(&[old_done.clone(), old_open.clone(), new_done.clone()])
        .await
        .unwrap();
    let claimed = outbox.claim("a", at(60), LEASE, 10).await.unwrap();
    for c in &claimed {
        if c.event.id != old_open.id {
            assert!(
                outbox
                    .settle(c.event.id, c.token, CallbackOutcome::Delivered, at(61))
                    .await
                    .unwrap()
            );
        }
    }
    assert_eq!(outbox.purge(at(10), 100).await.unwrap(), 1);
    assert_eq!(outbox.purge(at(10), 100).await.unwrap(), 0);
    assert_eq!(
        outbox.counts().await.unwrap(),
        CallbackCounts {
            pending: 1,
            delivered: 1,
            failed: 0,
        }
    );
}

/// One `#[test]` per case of the callback outbox contract, for the factory `$factory`
/// (an async fn returning `Option<ContractOutbox>`).
#[macro_export]
macro_rules! callback_contract_tests {
    ($factory:path) => {
        $crate::callback_contract_tests!(@cases $factory;
            claims_hand_out_due_events_oldest_first,
            enqueueing_an_event_again_keeps_one,
            every_kind_of_event_comes_back_as_stored,
            a_lapsed_lease_is_claimed_again_and_the_old_claim_refused,
            settled_events_are_never_claimed_again,
            a_retry_waits_for_its_time,
            concurrent_claimers_never_share_an_event,
            purge_deletes_old_settled_events_only,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testing::store_contract::run(async {
                    let Some(store) = $factory().await else {
                        return;
                    };
                    $crate::testing::callback_contract::$case(&store.backend).await;
                });
            }
        )*
    };
}
