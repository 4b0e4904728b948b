//! The contract of [`DeferredQueue`] and [`UsageLedger`], written once and run against
//! every backend: the in-memory fakes of this crate, SQLite and Postgres in `sms-store`,
//! and any third-party backend.
//!
//! Each case is a `pub async fn` taking the queue (`&Arc<dyn DeferredQueue>`) or the
//! ledger (`&Arc<dyn UsageLedger>`) to drive, grouped by concept: [`enqueue`],
//! [`claim`], [`renew`], [`outcome`], [`defer`], [`narrow`], [`pinning`], [`operator`],
//! [`lanes`], [`batch`] and [`ledger`]. The cases guard what the gateway relies on:
//!
//! - concurrent drainers never lease one message twice
//!   ([`claim::concurrent_claimers_never_share_a_message`] and the lease cases);
//! - a sender that dies leaves a lease that lapses and is claimed again, and its late
//!   outcome is refused instead of overwriting the new holder's
//!   ([`claim::a_lapsed_lease_is_claimed_again_and_the_old_token_is_refused`]);
//! - a sender that needs longer than its lease extends it, and only while it still
//!   holds the message ([`renew`]);
//! - retries end: a dead message is kept and never claimed, a failed one waits for its
//!   backoff ([`outcome`]);
//! - a message given back while every vendor rests waits for the rest to end, and the
//!   claim that gave it back costs it no attempt ([`defer`]);
//! - a split send a vendor took for some recipients is retried to the others only, and
//!   never narrowed to nobody ([`narrow`]);
//! - a message past its deliver-by time is taken out for good
//!   ([`outcome::expire_marks_the_message_expired`]);
//! - a message a vendor's per-number limit refused goes back to that vendor, until a
//!   failure without a pin or an operator's retry frees it ([`pinning`]);
//! - a login code is claimed before the bulk backlog, yet a claim can keep room for
//!   normal messages so they are never starved; a client's scheduled message can be
//!   cancelled until a sender takes it, and never goes out after ([`lanes`]);
//! - usage is counted per billed message and period, exactly under concurrency
//!   ([`ledger`]);
//! - arguments and recipients are lists, so any text survives, separators included
//!   ([`enqueue::arguments_and_recipients_round_trip_exactly`]).
//!
//! # Running the suite against a backend
//!
//! Write an async factory returning a fresh, empty [`ContractStore`] (or `None`, after
//! printing why, to skip when the backend's server is unreachable), then expand
//! [`store_contract_tests!`](crate::store_contract_tests) with it in a test module: one
//! `#[test]` per case, each on a fresh store and a tokio runtime of its own. A backend
//! whose batches are transactions also expands
//! [`store_contract_atomic_batch_tests!`](crate::store_contract_atomic_batch_tests).
//! The calling crate needs `sms-core` with the `testing` feature, nothing else.
//!
//! ```
//! use std::sync::Arc;
//!
//! use sms_core::testing::store_contract::ContractStore;
//! use sms_core::testing::{MemoryLedger, MemoryQueue};
//!
//! // A backend's factory; these in-memory fakes stand in for it. A store that needs
//! // something kept alive until it is dropped (a temporary directory, a schema to
//! // drop) hands it to `ContractStore::keeping`.
//! async fn my_store() -> Option<ContractStore> {
//!     Some(ContractStore::split(
//!         Arc::new(MemoryQueue::new()),
//!         Arc::new(MemoryLedger::new()),
//!     ))
//! }
//!
//! sms_core::store_contract_tests!(my_store);
//! # fn main() {}
//! ```
//!
//! A backend implementing only one of the traits calls the cases of that trait itself,
//! inside [`run`].

pub mod batch;
pub mod claim;
pub mod defer;
pub mod enqueue;
pub mod fixtures;
pub mod lanes;
pub mod ledger;
pub mod narrow;
pub mod operator;
pub mod outcome;
pub mod pinning;
pub mod renew;
mod support;

use std::future::Future;
use std::sync::Arc;

use crate::ledger::UsageLedger;
use crate::queue::DeferredQueue;

/// A backend under test: the queue and the ledger the cases drive (often one object),
/// and whatever must live as long as they do.
pub struct ContractStore {
    /// The queue the queue cases drive.
    pub queue: Arc<dyn DeferredQueue>,
    /// The ledger the ledger cases drive.
    pub ledger: Arc<dyn UsageLedger>,
    /// Dropped after the queue and the ledger (fields drop in declaration order): a
    /// temporary directory or a database schema they live in.
    keep: Option<Box<dyn Send>>,
}

impl ContractStore {
    /// A backend whose queue and ledger are one object.
    pub fn new<S>(store: Arc<S>) -> Self
    where
        S: DeferredQueue + UsageLedger + 'static,
    {
        Self {
            queue: store.clone(),
            ledger: store,
            keep: None,
        }
    }

    /// A backend with separate queue and ledger objects.
    pub fn split(queue: Arc<dyn DeferredQueue>, ledger: Arc<dyn UsageLedger>) -> Self {
        Self {
            queue,
            ledger,
            keep: None,
        }
    }

    /// Keeps `resource` alive until the store is dropped, and drops it after the queue
    /// and the ledger.
    pub fn keeping(self, resource: impl Send + 'static) -> Self {
        Self {
            keep: Some(Box::new(resource)),
            ..self
        }
    }
}

impl std::fmt::Debug for ContractStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContractStore")
            .field("keeps_a_resource", &self.keep.is_some())
            .finish_non_exhaustive()
    }
}

/// Runs one case to completion on a fresh multi-thread tokio runtime of four workers,
/// as the macros do: the concurrent cases need tasks that really run in parallel.
///
/// # Panics
///
/// When the runtime cannot be built, and when the case fails.
pub fn run<F: Future>(case: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime for the store contract")
        .block_on(case)
}

/// Expands to one `#[test]` per case every [`DeferredQueue`] and [`UsageLedger`]
/// backend must pass, each on a fresh store from `$factory`: a path to an async fn
/// returning `Option<ContractStore>` (`None` skips the case). See
/// [`testing::store_contract`](crate::testing::store_contract).
#[macro_export]
macro_rules! store_contract_tests {
    ($factory:path) => {
        $crate::store_contract_tests!(@queue $factory;
            enqueue::enqueue_then_get_returns_the_stored_message,
            enqueue::unknown_ids_and_keys_are_absent,
            enqueue::same_idempotency_key_twice_returns_existing_and_stores_one_row,
            enqueue::concurrent_enqueues_with_one_key_store_one_row,
            enqueue::messages_without_key_never_collide,
            enqueue::reusing_a_message_id_is_an_error,
            enqueue::enqueue_leased_is_claimable_only_after_its_lease,
            enqueue::enqueue_sent_records_the_vendor_and_is_never_claimed,
            enqueue::arguments_and_recipients_round_trip_exactly,
            enqueue::every_reason_round_trips_through_enqueue_and_get,
            claim::claim_takes_oldest_due_first_up_to_the_limit,
            claim::claim_breaks_due_time_ties_by_id,
            claim::claim_with_limit_zero_claims_nothing,
            claim::messages_are_not_claimable_before_their_due_time,
            claim::every_claim_counts_one_attempt,
            claim::a_lapsed_lease_is_claimed_again_and_the_old_token_is_refused,
            claim::a_lapsed_lease_not_yet_reclaimed_still_accepts_its_token,
            claim::a_reclaimed_lapsed_lease_is_flagged_may_duplicate,
            claim::concurrent_claimers_never_share_a_message,
            renew::renew_extends_so_a_claim_before_the_new_expiry_takes_nothing,
            renew::renew_of_a_lapsed_lease_not_yet_reclaimed_holds_it_again,
            renew::renew_extends_a_lease_stored_with_the_message,
            renew::renew_with_a_stale_token_after_another_claim_is_lease_lost,
            renew::renew_of_a_message_no_longer_leased_is_refused,
            outcome::complete_marks_sent_and_records_the_vendor,
            outcome::fail_requeues_with_backoff_and_keeps_the_failure,
            outcome::dead_messages_are_kept_and_never_claimed,
            outcome::expire_marks_the_message_expired,
            outcome::release_requeues_now_without_counting_the_attempt,
            outcome::retry_requeues_dead_and_expired_messages_only,
            outcome::updates_of_unknown_messages_are_not_found,
            defer::defer_requeues_at_due_at_without_counting_the_attempt,
            defer::defer_with_a_stale_token_is_lease_lost,
            narrow::narrow_keeps_the_other_recipients_in_order,
            narrow::narrow_with_a_stale_token_is_lease_lost,
            narrow::narrowing_away_every_recipient_is_refused,
            narrow::a_narrowed_message_can_still_be_failed_completed_or_buried,
            pinning::a_pinned_failure_stores_its_vendor_and_the_claim_returns_it,
            pinning::a_failure_without_a_pin_clears_it,
            pinning::dead_keeps_the_pin_and_retry_clears_it,
            operator::list_returns_one_status_oldest_first_up_to_the_limit,
            operator::stats_count_every_status,
            operator::purge_sent_removes_only_old_sent_messages,
            operator::purge_sent_works_through_more_than_one_batch,
            lanes::high_priority_messages_are_claimed_before_older_normal_ones,
            lanes::normal_min_keeps_room_for_normal_messages,
            lanes::next_due_is_the_earliest_due_message_or_lapsing_lease,
            lanes::cancel_takes_a_queued_message_out_for_good,
            lanes::cancel_refuses_leased_and_final_messages,
            lanes::a_message_waiting_for_a_retry_can_be_cancelled,
            lanes::list_for_client_returns_one_clients_messages_of_one_status_oldest_first,
            lanes::client_priority_and_schedule_round_trip_through_enqueue_and_get,
            lanes::client_priority_and_schedule_round_trip_through_enqueue_many,
            batch::enqueue_many_stores_every_message_and_answers_created_in_order,
            batch::enqueue_many_answers_existing_for_known_and_repeated_keys,
            batch::enqueue_many_of_nothing_stores_nothing,
            batch::enqueue_many_round_trips_arguments_and_recipients_exactly,
            batch::enqueue_many_keeps_every_reason,
            batch::enqueue_answers_equal_what_get_returns_at_the_stored_precision,
            batch::concurrent_enqueue_many_with_shared_keys_store_each_key_once,
            batch::complete_many_marks_every_message_sent_with_its_vendor,
            batch::complete_many_refuses_a_wrong_token_for_that_message_only,
            batch::complete_many_answers_unknown_ids_like_complete,
            batch::complete_many_of_nothing_changes_nothing,
        );
        $crate::store_contract_tests!(@ledger $factory;
            ledger::ledger_add_returns_the_running_total,
            ledger::ledger_periods_and_vendors_are_separate,
            ledger::ledger_increments_from_50_concurrent_tasks_sum_exactly,
        );
    };
    (@queue $factory:path; $($group:ident :: $case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testing::store_contract::run(async {
                    if let Some(store) = $factory().await {
                        $crate::testing::store_contract::$group::$case(&store.queue).await;
                    }
                });
            }
        )*
    };
    (@ledger $factory:path; $($group:ident :: $case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testing::store_contract::run(async {
                    if let Some(store) = $factory().await {
                        $crate::testing::store_contract::$group::$case(&store.ledger).await;
                    }
                });
            }
        )*
    };
}

/// Expands to one `#[test]` per case only a backend whose batches are transactions
/// passes: a batch with one failing message stores none of it. Takes the same factory
/// as [`store_contract_tests!`](crate::store_contract_tests); the in-memory fake stores
/// a batch one message at a time and does not run these.
#[macro_export]
macro_rules! store_contract_atomic_batch_tests {
    ($factory:path) => {
        $crate::store_contract_tests!(@queue $factory;
            batch::enqueue_many_stores_nothing_when_one_message_fails,
        );
    };
}
