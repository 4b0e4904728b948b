//! Durable deferred queue, usage and spend ledgers, delivery log, callback outbox and
//! blocklist: Postgres for several instances, and embedded SQLite for one.
//!
//! Both backends implement [`sms_core::DeferredQueue`] and [`sms_core::UsageLedger`]
//! with the same behaviour as `sms_core::testing::MemoryQueue` (the contract suite
//! `sms_core::testing::store_contract` runs against all three in `tests/it`):
//!
//! - a claim is one atomic step that leases up to `limit` due messages (high-priority
//!   ones first, then normal ones, each lane oldest due first, with room kept for
//!   normal ones when asked) under a fresh token, so concurrent drainers never get the
//!   same message;
//! - a cancelled message is final and never claimed; only a queued one can be
//!   cancelled;
//! - every later change of a leased message names that token and is refused with
//!   [`sms_core::StoreError::LeaseLost`] once someone else holds the message;
//! - a message with an idempotency key is stored at most once;
//! - ledger increments are single atomic upserts, exact under concurrency.
//!
//! They also implement [`sms_core::DeliveryLog`] (each recipient's send and the receipt
//! that settles it), [`sms_core::CallbackOutbox`] (status events waiting to be posted
//! to clients), [`sms_core::Blocklist`] (numbers that get no messages) and
//! [`sms_core::SpendLedger`] (money spent per client and period), each checked by its
//! own contract suite (`sms_core::testing::delivery_contract`, `callback_contract`,
//! `blocklist_contract`, `spend_contract`) against the in-memory fake and both
//! backends:
//!
//! - an event is stored once per id; a callback claim leases due events oldest due
//!   first, each under a token of its own, so concurrent dispatchers never post the
//!   same event at once;
//! - settling an event names its token and changes nothing once the lease has lapsed
//!   and another claim holds the event; a delivered or failed event is never claimed
//!   again;
//! - blocking a blocked number keeps its first entry; a look-up of a request's
//!   recipients is one query;
//! - an addition of spend is one write in which every client's total is upserted, so a
//!   call lands whole and concurrent additions are exact.
//!
//! Times are kept to the microsecond (Postgres' precision) in both backends, so a time
//! read back may be up to a microsecond earlier than the one written. Postgres, shared by
//! instances with clocks of their own, times leases by the database's clock
//! ([`postgres::LeaseClock`]).
//!
//! [`GroupCommit`] wraps either (or any queue) so that concurrent live sends share their
//! commits, and [`TracedQueue`] opens a `tracing` span around each call.
//!
//! Features (both on by default): `postgres` ([`postgres::PgStore`]) and `sqlite`
//! ([`sqlite::SqliteStore`]).

// Shared by the backends; with neither built there is nothing to convert.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod blocklist_codec;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod codec;
mod error;
mod group_commit;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod spend_codec;
mod traced;

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use error::Error;
pub use group_commit::{DEFAULT_MAX_ROWS, GroupCommit};
pub use traced::TracedQueue;
