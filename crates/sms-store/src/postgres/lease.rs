//! The lease parameters of the queue's statements under a [`LeaseClock`]: the time a
//! lease starts from (the caller's `now`, or NULL for the database's time, see
//! `lease_end!` in `statements`), its length, and the end handed back to the caller.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sms_core::{StoreError, StoredMessage};

use super::config::LeaseClock;
use crate::codec;

/// The lease a claim or a renewal starts.
pub(super) struct LeaseTiming {
    /// The time it starts from: `now`, or `None` (NULL) for the database's time.
    pub(super) start: Option<DateTime<Utc>>,
    /// Its length in microseconds.
    pub(super) micros: i64,
    /// Its end in the caller's clock: `now` plus its length.
    caller_end: DateTime<Utc>,
}

impl LeaseTiming {
    /// A lease of `lease_for` asked for at the caller's `now`.
    pub(super) fn new(
        clock: LeaseClock,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<Self, StoreError> {
        let length = codec::lease_duration(lease_for)?;
        let micros = length.num_microseconds().ok_or_else(|| {
            StoreError::backend(format!("lease duration {lease_for:?} is out of range"))
        })?;
        Ok(Self {
            start: start(clock, now),
            micros,
            caller_end: codec::whole_micros(now + length),
        })
    }

    /// The end of the lease to hand back, given the one stored. When the caller's clock
    /// times leases that is the stored end; when the database's does, the caller's `now`
    /// plus the length. That `now` was taken before the statement ran, so with clocks in
    /// agreement it is never later than the stored end.
    pub(super) fn end_for_caller(&self, stored: DateTime<Utc>) -> DateTime<Utc> {
        match self.start {
            Some(_) => stored,
            None => self.caller_end,
        }
    }

    /// `m` as the caller is told of it: its lease's end per [`Self::end_for_caller`].
    pub(super) fn for_caller(&self, mut m: StoredMessage) -> StoredMessage {
        if let Some(lease) = m.lease.as_mut() {
            lease.expires_at = self.end_for_caller(lease.expires_at);
        }
        m
    }
}

/// The start parameter of a lease asked for at the caller's `now`.
pub(super) fn start(clock: LeaseClock, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match clock {
        LeaseClock::Caller => Some(now),
        LeaseClock::Database => None,
    }
}
