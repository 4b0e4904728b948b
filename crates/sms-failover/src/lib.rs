//! The send path: rate limit, vendor health, cheapest-healthy failover, deferred-queue drain.
//!
//! [`Gateway`] is the whole of it: [`Gateway::send`] for live requests, and a drainer
//! ([`Gateway::start_drainer`]) that re-sends what was queued. Vendor selection is a pure
//! function ([`selection::choose_vendor`]); health, switching and billed usage live in
//! one small state behind one short lock, never held across an await (see the `health`
//! module docs for the rules: exactly N failures, epochs, cooldown, probing, no
//! flapping). A send takes it to pick its vendor and again to record the answer: a
//! few hundred nanoseconds beside a vendor call of tens of milliseconds.
//!
//! Instances of one deployment can share that state on a board ([`GatewayBuilder::board`],
//! a Redis one in `sms-limit`): each keeps a copy to send by, and changes it on the board
//! by compare-and-set, so they switch as one (see [`Gateway::start_sharing`]).
//!
//! This crate knows nothing about Postgres, Redis or any vendor's API: it uses the
//! traits of `sms-core` only.
//!
//! # Guarantees, and the tests that check them
//!
//! | The gateway… | Tests |
//! |---|---|
//! | never sends a claimed message twice, however many drainers share a queue: claims are leased under a token, one pass runs at a time per process | `two_gateways_draining_one_queue_never_send_a_message_twice` |
//! | retries a keyed message a crash interrupted once its lease lapses, and leaves a message to whoever holds its lease now | `a_crash_between_send_and_bookkeeping_is_retried_once_after_the_lease`, `a_lost_lease_is_counted_and_not_retried` |
//! | retries with backoff up to an attempt cap, then marks the message dead; retries without new traffic, and at start-up | `a_failing_message_backs_off_and_dies_after_max_attempts`, `the_drainer_retries_stored_messages_without_new_traffic`, `the_drainer_drains_at_start_up` |
//! | drains on a task of its own, never on the caller's | `the_drain_outlives_the_request_that_triggered_it`, `without_a_drainer_a_success_does_not_drain_on_the_callers_task` |
//! | never loses a message silently: a store error reaches the caller, and a message stored after a timeout gets a deadline of its own | `a_limited_request_that_cannot_be_stored_is_an_error_not_silently_lost`, `a_timeout_is_queued_as_may_duplicate_and_stored_after_the_deadline` |
//! | tells the caller "queued", not "error", for a message it sends later, and never sends one past its deliver-by time | `a_globally_limited_request_is_queued_and_the_caller_is_told_so`, `an_expired_message_is_expired_not_sent` |
//! | switches on exactly the N-th consecutive failure, once per episode under concurrency, and never charges a failure started before a switch to the new vendor | `switches_after_exactly_n_consecutive_failures`, `many_concurrent_failures_switch_exactly_once_per_episode_and_never_skip_a_vendor`, `failures_started_before_a_switch_are_not_charged_to_the_new_vendor` |
//! | retries the message whose failure made it switch at once, on the new vendor | `after_a_switch_the_failed_message_is_retried_at_once_on_the_new_vendor` |
//! | picks the cheapest healthy vendor (ties by configured order), probes a rested cheaper one back, and bills concurrent sends at exact tier prices | `the_next_vendor_is_the_cheapest_healthy_one_not_the_next_in_price_order`, `a_rested_cheaper_vendor_becomes_current_after_good_probes`, `concurrent_sends_bill_exact_volumes_and_exact_spend`, `choice_is_the_cheapest_healthy_then_first_configured` |
//! | lets each vendor's typed fee schedule decide | `real_fee_schedules_drive_the_choice_not_round_robin`, `prices_decide_not_round_robin` |
//! | never treats a gap in a price list as free | `a_price_list_gap_does_not_make_a_vendor_free_and_always_win`, `a_zero_price_from_a_tier_gap_never_wins` |
//! | bills at least one message per recipient, in a ledger shared by every instance, per billing month | `a_fast_success_is_billed_per_recipient_and_recorded_for_look_ups`, `start_up_loads_this_periods_volumes_and_picks_the_cheapest`, `billed_volumes_restart_each_billing_month` |
//! | passes template arguments to the vendor as a list, whatever characters they hold | `arguments_with_separators_reach_the_vendor_unchanged_live_and_drained` |
//! | with a board, switches the whole deployment once, on the N-th failure on any instance; an operator's switch-off reaches every instance; a cut board leaves each instance on its own health until it rejoins; one probe per vendor at a time; prices follow the deployment's volume within a second | `four_instances_switch_once_on_the_nth_failure_anywhere`, `a_success_anywhere_resets_the_count_for_everyone`, `a_disable_through_one_instance_takes_effect_on_all_within_a_second`, `a_cut_board_leaves_each_instance_on_its_own_health_and_they_rejoin`, `one_probe_at_a_time_across_the_deployment`, `every_instance_prices_with_the_deployments_volume_within_a_second` |

mod backoff;
mod batch;
mod callbacks;
mod config;
mod error;
mod events;
mod gateway;
mod health;
pub mod selection;
#[cfg(test)]
mod test_support;
mod usage;
mod write_behind;

pub use backoff::{after, backoff_delay, jittered_backoff, retry_while_unavailable};
pub use config::{FailoverConfig, TimeoutPolicy};
pub use error::FailoverError;
pub use events::{AttemptOutcome, GatewayEvent, GatewayObserver};
pub use gateway::builder::GatewayBuilder;
pub use gateway::drainer::DrainerHandle;
pub use gateway::report::DrainReport;
pub use gateway::send::SendOutcome;
pub use gateway::shared::{BOARD_POLL, Deployment, InstanceBelief, SharingHandle, VendorBelief};
pub use gateway::{Gateway, TOTALS_REFRESH, VendorEntry, VendorSnapshot};
