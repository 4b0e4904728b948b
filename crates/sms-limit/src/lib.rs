//! Global and per-recipient rate limits: Redis, and in-process.
//!
//! Two seams of `sms-core` are implemented twice each:
//!
//! | seam | shared by all instances | this process only |
//! |------|-------------------------|-------------------|
//! | [`sms_core::RateLimiter`] (global send rate) | [`RedisLimiter`] | [`InProcessLimiter`] |
//! | [`sms_core::RecipientLimiter`] (SMS bombing) | [`RedisRecipientLimiter`] | [`InProcessRecipientLimiter`] |
//!
//! All four are sliding windows: at most `limit` permits in *any* window of the
//! configured length, whatever the spacing of the requests. All four are exact:
//! they refuse only what would break that. [`LimitConfig`] holds the
//! settings and their defaults (3000 per 1 s globally; 1 per 60 s and 10 per 24 h per
//! recipient; fail open).
//!
//! # Redis Cluster is not supported
//!
//! The recipients of a request are checked in one script over one key per recipient,
//! and those keys share no hash slot, so Redis Cluster would refuse every
//! multi-recipient check (`CROSSSLOT`). [`connect_client`] and the limiters'
//! `from_client` therefore fail with [`Error::RedisCluster`] when the server reports
//! cluster mode: use a standalone Redis, or a primary with replicas (with Sentinel for
//! failover). A Redis unreachable at start cannot be asked and is not checked.
//!
//! # When Redis is unreachable
//!
//! Every Redis call has a timeout. On failure the [`RedisErrorPolicy`] decides:
//! `FailOpen` (default) answers from an in-process limiter sized to this instance's
//! share of the global limit (`global_per_second / instances`) and from in-process
//! per-recipient windows; `FailClosed` answers `Limited` for the global limit (so the
//! gateway queues everything) and an `Unavailable` error for recipients. The switch
//! is logged once each way, and `degraded()` and `stats()` show it. The client
//! reconnects by itself; the next successful call restores normal operation.
//!
//! # Multi-recipient requests
//!
//! A recipient limiter only decides, recipient by recipient, in the order given:
//!
//! - each recipient is checked against every window; if any window is full it is
//!   `Limited` (naming the window that frees last, and when) and counted in **no**
//!   window; otherwise it is `Allowed` and counted in **every** window;
//! - recipients of one call do not affect each other, except that a number listed
//!   twice is checked twice, the second time after the first was counted;
//! - allowed recipients stay counted even when another recipient of the same call is
//!   limited.
//!
//! So the caller chooses the policy. The gateway rejects the whole request, naming a
//! limited recipient, when any is limited; the allowed recipients of that request
//! have then been counted without being sent to. A caller that refuses a request
//! after checking it can hand those counts back with `give_back`, which forgets each
//! listed recipient's newest message in every window (during an outage under
//! `FailOpen`, in the in-process fallback, which counted it). A caller that sends to
//! the allowed recipients only can use the decisions as they are.
//!
//! # The shared board
//!
//! [`RedisBoard`] implements [`sms_core::SharedBoard`] on the same Redis: the versioned
//! document, claims and reports every instance of a deployment shares, with each write
//! announced on a channel so that other instances read it again at once.

mod board;
mod config;
mod error;
mod in_process;
mod redis;
mod script;
mod time;
mod window;

pub use board::RedisBoard;
pub use config::{LimitConfig, RecipientWindow, RedisErrorPolicy};
pub use error::{ConfigError, Error};
pub use in_process::{InProcessLimiter, InProcessRecipientLimiter, RECIPIENT_SHARDS};
pub use redis::{LimiterStats, RedisLimiter, RedisRecipientLimiter, connect_client};
pub use time::{InstantClock, ManualMonotonicClock, MonotonicClock};

/// The Redis client type the limiters use, for callers that share one client.
pub use fred::prelude::Client as RedisClient;
