//! The send path: rate limit, vendor health, cheapest-healthy failover, deferred-queue drain.
//!
//! [`Gateway`] is the whole of it: [`Gateway::send`] for live requests, and a drainer
//! ([`Gateway::start_drainer`]) that re-sends what was queued. Vendor selection is a pure
//! function ([`selection::choose_vendor`]); health and switching live in one small state
//! behind one short lock (see the `health` module docs for the rules: exactly N
//! failures, epochs, cooldown, probing, no flapping). In the steady state a send does
//! not take that lock: it reads a route published from the health state and counts its
//! billed messages per thread (the `route` module says why no rule changes).
//!
//! This crate knows nothing about Postgres, Redis or any vendor's API: it uses the
//! traits of `sms-core` only.
//!
//! # Defects of the original design, and the tests that catch them
//!
//! | Defect | Fix | Tests |
//! |---|---|---|
//! | 2 concurrent drains resend rows | claims under a lease with a token; one pass at a time per process | `two_gateways_draining_one_queue_never_send_a_message_twice` |
//! | 3 send-then-delete not atomic | keyed messages are stored leased before the attempt; outcomes are token-checked updates | `a_crash_between_send_and_bookkeeping_is_retried_once_after_the_lease`, `a_lost_lease_is_counted_and_not_retried` |
//! | 4 retried forever / never without traffic | attempt cap, dead status, backoff; periodic tick and start-up pass | `a_failing_message_backs_off_and_dies_after_max_attempts`, `the_drainer_retries_stored_messages_without_new_traffic`, `the_drainer_drains_at_start_up` |
//! | 5 drain on the request's context | its own task, woken by a notify | `the_drain_outlives_the_request_that_triggered_it`, `without_a_drainer_a_success_does_not_drain_on_the_callers_task` |
//! | 6 insert errors lost | store errors reach the caller; stores after a timeout are not bounded by it | `a_limited_request_that_cannot_be_stored_is_an_error_not_silently_lost`, `a_timeout_is_queued_as_may_duplicate_and_stored_after_the_deadline` |
//! | 7 "error" yet sent later | `Queued` outcome; expiry | `a_globally_limited_request_is_queued_and_the_caller_is_told_so`, `an_expired_message_is_expired_not_sent` |
//! | 8 races, N+1 | epoch-stamped tickets, one critical section | `switches_after_exactly_n_consecutive_failures`, `many_concurrent_failures_switch_exactly_once_per_episode_and_never_skip_a_vendor`, `failures_started_before_a_switch_are_not_charged_to_the_new_vendor` |
//! | 9 no retry on another vendor | the failure that switches is due at once; the drain re-picks the vendor | `after_a_switch_the_failed_message_is_retried_at_once_on_the_new_vendor` |
//! | 10 next in price order, fee read race | cheapest healthy, ties by order, probing back; ledger's atomic total places usage in tiers | `the_next_vendor_is_the_cheapest_healthy_one_not_the_next_in_price_order`, `a_rested_cheaper_vendor_becomes_current_after_good_probes`, `concurrent_sends_bill_exact_volumes_and_exact_spend`, `choice_is_the_cheapest_healthy_then_first_configured` |
//! | 11 every fee 1.0 | typed fee schedules decide | `real_fee_schedules_drive_the_choice_not_round_robin`, `prices_decide_not_round_robin` |
//! | 12 price gap costs 0 | a non-positive price ranks last | `a_price_list_gap_does_not_make_a_vendor_free_and_always_win`, `a_zero_price_from_a_tier_gap_never_wins` |
//! | 13 in-memory per-request counters | shared ledger per billing month, at least one per recipient | `a_fast_success_is_billed_per_recipient_and_recorded_for_look_ups`, `start_up_loads_this_periods_volumes_and_picks_the_cheapest`, `billed_volumes_restart_each_billing_month` |
//! | 14 separators | arguments stay a list end to end | `arguments_with_separators_reach_the_vendor_unchanged_live_and_drained` |

mod backoff;
mod config;
mod drainer;
mod error;
mod events;
mod gateway;
mod health;
mod route;
pub mod selection;
mod write_behind;

pub use backoff::{backoff_delay, jittered_backoff};
pub use config::{FailoverConfig, TimeoutPolicy};
pub use drainer::DrainerHandle;
pub use error::FailoverError;
pub use events::{AttemptOutcome, GatewayEvent, GatewayObserver};
pub use gateway::{DrainReport, Gateway, GatewayBuilder, SendOutcome, VendorEntry, VendorSnapshot};
