//! In-process limiters: the embedded default, and the fail-open fallback of the Redis ones.
//!
//! All keep sliding logs: the times of the permits still inside the window. A
//! request at time `t` fits when fewer than `limit` logged permits are newer than
//! `t - window`, so at most `limit` go through in any window, however the requests
//! bunch up (a fixed-window counter lets up to `2 × limit` through around a boundary).
//! The client limiter's `per_day` is the exception: a count per UTC calendar day.

mod client;
mod global;
mod recipients;

pub use client::InProcessClientLimiter;
pub(crate) use client::SECOND;
pub use global::InProcessLimiter;
pub use recipients::{InProcessRecipientLimiter, RECIPIENT_SHARDS};
