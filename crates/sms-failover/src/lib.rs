//! The send path: rate limit, vendor health, cheapest-healthy failover, deferred-queue drain.
//!
//! [`Gateway`] is the whole of it: [`Gateway::send`] for live requests, and a drainer
//! ([`Gateway::start_drainer`]) that re-sends what was queued. Vendor selection is a pure
//! function ([`selection::choose_vendor`]); health and switching live in one small state
//! behind one short lock (see the `health` module docs for the rules: exactly N
//! failures, epochs, cooldown, probing, no flapping).
//!
//! This crate knows nothing about Postgres, Redis or any vendor's API: it uses the
//! traits of `sms-core` only.

mod backoff;
mod config;
mod drainer;
mod error;
mod events;
mod gateway;
mod health;
pub mod selection;

pub use backoff::{backoff_delay, jittered_backoff};
pub use config::{FailoverConfig, TimeoutPolicy};
pub use drainer::DrainerHandle;
pub use error::FailoverError;
pub use events::{AttemptOutcome, GatewayEvent, GatewayObserver};
pub use gateway::{DrainReport, Gateway, SendOutcome, VendorEntry, VendorSnapshot};
