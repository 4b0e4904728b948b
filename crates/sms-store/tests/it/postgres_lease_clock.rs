//! Whose clock times Postgres leases. Instances share the database but not a clock: with
//! `LeaseClock::Database` a claim, a renewal and an enqueue of a leased message time the
//! lease by the database's clock, so an instance whose clock runs ahead cannot take a
//! message another one holds, and one whose clock runs behind cannot keep a lease that
//! lapsed. A few cases run in `LeaseClock::Caller` mode as well, to show the same steps
//! come out differently when each caller's clock decides.
//!
//! The skew is simulated: an "instance" whose clock is off passes `Utc::now()` shifted by
//! [`SKEW`]. The database runs on this machine, so its clock agrees with `Utc::now()`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sms_core::{
    DeferredQueue, Enqueued, InitialState, Lease, LeaseToken, MessageId, NewMessage, QueueReason,
    StoredMessage,
};
use sms_store::postgres::{LeaseClock, PgConfig, PgStore};

use crate::support::{
    SchemaGuard, at, connect_or_skip, keyed_request, pg_config, queued, queued_request,
};

/// How far the clock of a skewed instance is off.
const SKEW: chrono::Duration = chrono::Duration::minutes(10);

/// The lease of most claims here.
const LEASE: Duration = Duration::from_secs(30);

/// A lease short enough to lapse while the test waits.
const SHORT_LEASE: Duration = Duration::from_secs(1);

/// How long a test waits for [`SHORT_LEASE`] to lapse in the database's time.
const PAST_SHORT_LEASE: Duration = Duration::from_millis(1_300);

/// Two gateway instances on one fresh schema, both timing leases with `clock`; `None`
/// when Postgres is unreachable outside CI.
async fn two_instances(clock: LeaseClock) -> Option<(PgStore, PgStore, SchemaGuard)> {
    let guard = SchemaGuard::fresh();
    let config = PgConfig {
        lease_clock: clock,
        ..pg_config(&guard)
    };
    let first = connect_or_skip(config.clone()).await?;
    let second = PgStore::connect(config).await.unwrap();
    Some((first, second, guard))
}

/// The database server's time now.
async fn database_now(store: &PgStore) -> DateTime<Utc> {
    let client = store.pool().get().await.unwrap();
    client
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .unwrap()
        .get(0)
}

/// `t` to the microsecond, as the database keeps it.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap()
}

/// The end of the lease stored for `id`.
async fn stored_lease_end(store: &PgStore, id: MessageId) -> DateTime<Utc> {
    let m = store.get(id).await.unwrap().expect("message is stored");
    m.lease.expect("message is leased").expires_at
}

/// Asserts that the stored lease of `id` ends [`LEASE`] after a database time between
/// `before` and `after`.
async fn assert_lease_ends_in_database_time(
    store: &PgStore,
    id: MessageId,
    before: DateTime<Utc>,
    after: DateTime<Utc>,
) {
    let end = stored_lease_end(store, id).await;
    let (earliest, latest) = (before + LEASE, after + LEASE);
    assert!(
        earliest <= end && end <= latest,
        "expected the lease to end between {earliest} and {latest} (database time), found {end}"
    );
}

/// The token of a claimed message's lease.
fn token(m: &StoredMessage) -> LeaseToken {
    m.lease.as_ref().expect("claimed message has a lease").token
}

/// Instance one leases a message for 30 s; a moment later instance two, whose clock runs
/// [`SKEW`] ahead, claims. Answers how many messages instance two took.
async fn claims_by_an_instance_ahead(clock: LeaseClock) -> Option<usize> {
    let (first, second, _guard) = two_instances(clock).await?;
    let m = first.enqueue(queued(at(0), at(0))).await.unwrap();
    let held = first
        .claim("instance-1", Utc::now(), LEASE, 10)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].id, m.message().id);
    let taken = second
        .claim("instance-2", Utc::now() + SKEW, LEASE, 10)
        .await
        .unwrap();
    Some(taken.len())
}

#[tokio::test]
async fn an_instance_whose_clock_runs_ahead_cannot_claim_a_held_lease() {
    let Some(taken) = claims_by_an_instance_ahead(LeaseClock::Database).await else {
        return;
    };
    assert_eq!(taken, 0, "the lease still runs in the database's time");
}

/// The same steps with each caller's clock deciding: the instance ahead takes the
/// message its peer holds, so the case above would catch a claim that used it.
#[tokio::test]
async fn with_the_callers_clocks_an_instance_ahead_claims_a_held_lease() {
    let Some(taken) = claims_by_an_instance_ahead(LeaseClock::Caller).await else {
        return;
    };
    assert_eq!(taken, 1, "by the caller's clock the lease lapsed");
}

/// A claim stores a lease that ends 30 s after the database's time, and hands back one
/// that ends 30 s after the caller's `now`: the end the gateway compares with its own
/// clock.
#[tokio::test]
async fn a_claim_stores_database_time_and_answers_in_the_callers_clock() {
    let Some((store, _, _guard)) = two_instances(LeaseClock::Database).await else {
        return;
    };
    let m = store.enqueue(queued(at(0), at(0))).await.unwrap();
    let id = m.message().id;
    // A caller whose clock runs behind, so the two ends cannot agree by chance.
    let now = Utc::now() - SKEW;
    let before = database_now(&store).await;
    let claimed = store.claim("instance-1", now, LEASE, 10).await.unwrap();
    let after = database_now(&store).await;
    assert_eq!(claimed.len(), 1);
    let lease = claimed[0].lease.as_ref().unwrap();
    assert_eq!(lease.expires_at, micros(now + LEASE));
    assert_eq!(
        claimed[0].updated_at,
        micros(now),
        "the caller dates the change"
    );
    assert_lease_ends_in_database_time(&store, id, before, after).await;

    // With clocks in agreement, the end handed back is never later than the stored one.
    let m = store.enqueue(queued(at(0), at(0))).await.unwrap();
    let claimed = store
        .claim("instance-1", Utc::now(), LEASE, 10)
        .await
        .unwrap();
    let handed_back = claimed[0].lease.as_ref().unwrap().expires_at;
    assert!(handed_back <= stored_lease_end(&store, m.message().id).await);
}

/// A deferral stores the caller's due time as given, as every due time is: only leases
/// are timed by the database's clock. Until then the message is not due in the
/// database's time, so an instance whose clock runs ahead takes nothing either.
#[tokio::test]
async fn a_deferral_is_due_at_the_callers_due_time() {
    let Some((first, second, _guard)) = two_instances(LeaseClock::Database).await else {
        return;
    };
    let m = first.enqueue(queued(at(0), at(0))).await.unwrap();
    let now = Utc::now();
    let claimed = first.claim("instance-1", now, LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let due_at = now + chrono::Duration::seconds(60);
    first
        .defer(m.message().id, token(&claimed[0]), due_at, now)
        .await
        .unwrap();
    let deferred = first.get(m.message().id).await.unwrap().unwrap();
    assert_eq!(deferred.next_attempt_at, micros(due_at));
    assert_eq!(deferred.updated_at, micros(now));
    assert_eq!(deferred.attempts, 0);
    assert!(
        second
            .claim("instance-2", Utc::now() + SKEW, LEASE, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet in the database's time"
    );
}

/// A lease of one second really lapses in the database's time: instance two claims the
/// message although by its own clock, which runs behind, the lease has minutes to go.
/// The claim flags it `may_duplicate`, as any claim of a lapsed lease does.
#[tokio::test]
async fn a_lease_lapsed_in_database_time_is_claimed_again_and_flagged_may_duplicate() {
    let Some((first, second, _guard)) = two_instances(LeaseClock::Database).await else {
        return;
    };
    let m = first.enqueue(queued(at(0), at(0))).await.unwrap();
    let held = first
        .claim("instance-1", Utc::now(), SHORT_LEASE, 10)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert!(!held[0].may_duplicate);
    assert!(
        second
            .claim("instance-2", Utc::now() - SKEW, LEASE, 10)
            .await
            .unwrap()
            .is_empty(),
        "the lease has not lapsed yet"
    );

    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let rescued = second
        .claim("instance-2", Utc::now() - SKEW, LEASE, 10)
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1, "the lease lapsed in the database's time");
    let rescued = &rescued[0];
    assert_eq!(rescued.id, m.message().id);
    assert_eq!(rescued.attempts, 2);
    assert!(rescued.may_duplicate, "{rescued:?}");
    assert_eq!(rescued.lease.as_ref().unwrap().owner, "instance-2");
    assert_ne!(token(rescued), token(&held[0]));
}

/// Renews instance one's one-second lease for 30 s, by a caller whose clock runs behind,
/// then lets the first second pass. Answers whether instance two could claim the message
/// then.
async fn renewed_lease_claimable_after_the_first_one_lapsed(clock: LeaseClock) -> Option<bool> {
    let (first, second, _guard) = two_instances(clock).await?;
    let m = first.enqueue(queued(at(0), at(0))).await.unwrap();
    let id = m.message().id;
    let held = first
        .claim("instance-1", Utc::now(), SHORT_LEASE, 10)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);

    let now = Utc::now() - SKEW;
    let before = database_now(&first).await;
    let renewed = first.renew(id, token(&held[0]), LEASE, now).await.unwrap();
    let after = database_now(&first).await;
    assert_eq!(
        renewed,
        Lease {
            owner: "instance-1".to_owned(),
            token: token(&held[0]),
            expires_at: micros(now + LEASE),
        },
        "the renewal answers in the caller's clock"
    );
    if clock == LeaseClock::Database {
        assert_lease_ends_in_database_time(&first, id, before, after).await;
    }

    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let taken = second
        .claim("instance-2", Utc::now(), LEASE, 10)
        .await
        .unwrap();
    Some(!taken.is_empty())
}

#[tokio::test]
async fn renew_extends_the_lease_in_database_time() {
    let Some(claimable) =
        renewed_lease_claimable_after_the_first_one_lapsed(LeaseClock::Database).await
    else {
        return;
    };
    assert!(!claimable, "the renewed lease runs 30 s of database time");
}

/// With each caller's clock deciding, the renewal by a clock that runs behind ends in
/// the past, and the message is taken: the case above would catch it.
#[tokio::test]
async fn with_the_callers_clocks_a_renewal_by_a_clock_behind_ends_in_the_past() {
    let Some(claimable) =
        renewed_lease_claimable_after_the_first_one_lapsed(LeaseClock::Caller).await
    else {
        return;
    };
    assert!(claimable);
}

/// A message stored leased, created by a caller whose clock runs behind.
fn leased_by_a_clock_behind(key: &str) -> NewMessage {
    let created = Utc::now() - SKEW;
    let mut new = queued_request(keyed_request(key), created, created);
    new.reason = QueueReason::Accepted;
    new.initial = InitialState::Leased(Lease {
        owner: "api-1".to_owned(),
        token: LeaseToken::new(),
        expires_at: created + LEASE,
    });
    new.attempts = 1;
    new
}

/// The lease a new message was stored with, which its enqueue answers.
fn lease_of(outcome: &Enqueued) -> Lease {
    match outcome {
        Enqueued::Created(m) => m.lease.clone().expect("stored leased"),
        Enqueued::Existing(m) => panic!("expected a new row, found existing {}", m.id),
    }
}

/// Enqueued leased (a keyed send storing the message it is about to attempt), one by one
/// or in a batch, a message is held for its lease's length in the database's time,
/// however far the caller's clock is off; the answer keeps the caller's lease.
#[tokio::test]
async fn a_message_stored_leased_is_held_for_its_lease_in_database_time() {
    let Some((first, second, _guard)) = two_instances(LeaseClock::Database).await else {
        return;
    };
    let one = leased_by_a_clock_behind("clock-1");
    let batch = vec![leased_by_a_clock_behind("clock-2"), queued(at(0), at(0))];
    let before = database_now(&first).await;
    let stored_one = first.enqueue(one.clone()).await.unwrap();
    let stored_batch = first.enqueue_many(batch.clone()).await.unwrap();
    let after = database_now(&first).await;

    for (new, outcome) in [(&one, &stored_one), (&batch[0], &stored_batch[0])] {
        let InitialState::Leased(asked) = &new.initial else {
            unreachable!("built leased")
        };
        let answered = lease_of(outcome);
        assert_eq!(answered.expires_at, micros(asked.expires_at));
        assert_eq!(answered.token, asked.token);
        assert_lease_ends_in_database_time(&first, new.id, before, after).await;
    }
    let taken = second
        .claim("instance-2", Utc::now(), LEASE, 10)
        .await
        .unwrap();
    let taken: Vec<MessageId> = taken.iter().map(|m| m.id).collect();
    assert_eq!(taken, [batch[1].id], "only the queued message is due");
}

/// The claim in database time still walks the partial index `messages_claim_by_lane`
/// without sorting: the database's time is a bound of the index scan, not a filter on
/// each row.
#[tokio::test]
async fn a_claim_in_database_time_walks_the_partial_index() {
    let Some((store, _, _guard)) = two_instances(LeaseClock::Database).await else {
        return;
    };
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO messages (id, template, args, recipients, status, reason, attempts, \
                                   max_attempts, next_attempt_at, created_at, updated_at) \
             SELECT gen_random_uuid(), 'login_code', ARRAY['1'], ARRAY['+8613800138000'], \
                    CASE WHEN i % 100 = 0 THEN 'queued' ELSE 'sent' END, 'rate_limited', 1, 5, \
                    now(), now(), now() \
             FROM generate_series(1, 20000) AS i; \
             ANALYZE messages;",
        )
        .await
        .unwrap();
    let plan = store.explain_claim(Utc::now(), 100, 0).await.unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index Scan using messages_claim_by_lane")
            && plan.contains("(due_at <= COALESCE(statement_timestamp()))"),
        "plan does not bound the claim index scan:\n{plan}"
    );
    assert!(!plan.contains("Sort"), "plan sorts:\n{plan}");
}

/// Claimers on two instances in database time drain a backlog exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_in_database_time_drain_2_000_messages_exactly_once() {
    let Some((first, second, _guard)) = two_instances(LeaseClock::Database).await else {
        return;
    };
    let queues: [Arc<dyn DeferredQueue>; 2] = [Arc::new(first), Arc::new(second)];
    crate::drain::drain_exactly_once(&queues, 2_000).await;
}
