//! Global, per-recipient and per-client rate limits: Redis, and in-process.
//!
//! Three seams of `sms-core` are implemented twice each:
//!
//! | seam | shared by all instances | this process only |
//! |------|-------------------------|-------------------|
//! | [`sms_core::RateLimiter`] (global send rate) | [`RedisLimiter`] | [`InProcessLimiter`] |
//! | [`sms_core::RecipientLimiter`] (SMS bombing) | [`RedisRecipientLimiter`] | [`InProcessRecipientLimiter`] |
//! | [`sms_core::ClientLimiter`] (a caller's own quota) | [`RedisClientLimiter`] | [`InProcessClientLimiter`] |
//!
//! The global and recipient limits, and a client's `per_second`, are sliding windows:
//! at most `limit` permits in *any* window of the configured length, whatever the
//! spacing of the requests. A client's `per_day` counts the UTC calendar day. All six
//! are exact: they refuse only what would break that. [`LimitConfig`] holds the
//! settings and their defaults (3000 per 1 s globally, a tenth of it kept for
//! high-priority messages; 1 per 60 s, 5 per hour and 10 per 24 h per recipient; fail
//! open).
//!
//! # Two lanes in the global limit
//!
//! `acquire_lane` takes the message's priority. High-priority messages may use the
//! whole window; normal ones stop at the normal ceiling, the limit less
//! `high_priority_headroom` of it (2700 of 3000 by default), so that a login code
//! finds room however much bulk is being sent. Both lanes count in one window: a
//! high-priority permit also counts against the normal ceiling. A normal request
//! larger than the ceiling still goes, alone, in an empty window, so every request
//! within the limit can go eventually. `acquire` is the high lane. The Redis limiter
//! decides both lanes in the same one-round-trip script, the ceiling passed as an
//! argument; its fail-open fallback keeps the same share of its smaller window.
//!
//! # Client limits
//!
//! A client limiter takes the client's quota with each request (`per_second`,
//! `per_day`, either or both; clients' settings live with the clients, not in
//! [`LimitConfig`]) and counts the request's permits in every limit of the quota or,
//! when one is full, in none, naming the full limit (the one that frees last, when both
//! are) and when it allows the request: within a second for `per_second`, at the next
//! UTC midnight for `per_day`. A quota without limits counts nothing. `give_back`
//! returns the permits of a request refused later on, never more than are counted.
//! [`RedisClientLimiter`] decides both limits in one script, on the server's clock, so
//! instances sharing a client share its counts exactly.
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
//! `FailOpen` (default) answers from in-process limiters: a global one sized to this
//! instance's share of the global limit (`global_per_second / instances`, with the
//! same lanes), per-recipient windows as configured, and client limits at this
//! instance's share of each (`limit / instances`; a refusal still names the client's
//! configured limit). `FailClosed` answers `Limited` for the global limit (so the
//! gateway queues everything) and an `Unavailable` error for recipients and clients:
//! a `Limited` answer there would blame the caller for an outage. The switch is
//! logged once each way, and `degraded()` and `stats()` show it. The client
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
mod lane;
mod redis;
mod script;
mod time;
mod window;

pub use board::RedisBoard;
pub use config::{LimitConfig, RecipientWindow, RedisErrorPolicy};
pub use error::{ConfigError, Error};
pub use in_process::{
    InProcessClientLimiter, InProcessLimiter, InProcessRecipientLimiter, RECIPIENT_SHARDS,
};
pub use redis::{
    LimiterStats, RedisClientLimiter, RedisLimiter, RedisRecipientLimiter, connect_client,
};
pub use time::{InstantClock, ManualMonotonicClock, MonotonicClock};

/// The Redis client type the limiters use, for callers that share one client.
pub use fred::prelude::Client as RedisClient;
