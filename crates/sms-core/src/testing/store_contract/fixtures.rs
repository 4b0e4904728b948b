//! Fixed times and messages the cases store, public so a backend's own tests can build
//! the same ones.
//!
//! Times are whole seconds after a fixed start, so a backend that keeps microseconds
//! returns exactly what was written.

use chrono::{DateTime, TimeZone, Utc};

use crate::ids::{IdempotencyKey, MessageId};
use crate::queue::{NewMessage, QueueReason};
use crate::request::SmsRequest;

/// A fixed start time with whole seconds, so every backend stores it exactly.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0)
        .single()
        .expect("a valid fixed time")
}

/// `secs` seconds after [`t0`].
pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

/// A plain login-code request.
pub fn request() -> SmsRequest {
    SmsRequest::new("login_code", ["4321"], ["+8613800138000"]).expect("a valid request")
}

/// The same request with an idempotency key.
pub fn keyed_request(key: &str) -> SmsRequest {
    request().with_idempotency_key(IdempotencyKey::new(key).expect("a valid key"))
}

/// A message queued at `created` and due at `due`, five attempts allowed.
pub fn queued(created: DateTime<Utc>, due: DateTime<Utc>) -> NewMessage {
    queued_request(request(), created, due)
}

/// `request` queued at `created` and due at `due`, five attempts allowed.
pub fn queued_request(
    request: SmsRequest,
    created: DateTime<Utc>,
    due: DateTime<Utc>,
) -> NewMessage {
    let mut m = NewMessage::queued(
        MessageId::new(),
        request,
        QueueReason::RateLimited,
        5,
        created,
    );
    m.next_attempt_at = due;
    m
}
