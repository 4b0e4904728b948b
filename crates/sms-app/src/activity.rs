//! Sends and their outcomes per minute over the last hour, for the status page's charts.
//!
//! Sixty slots, one per minute of the hour, each counting with atomics: the observer
//! counts on every send, and a lock there would be taken tens of thousands of times a
//! second. A slot found holding an older minute is reset before it counts; counts that
//! race with that reset may be lost, a few at most, which a chart does not show.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// Minutes kept.
const MINUTES: usize = 60;

/// What a minute counts.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A message a vendor accepted.
    Sent,
    /// A vendor call that failed (any outcome but accepted).
    Failed,
    /// A message queued for a later attempt.
    Queued,
    /// A message that died or expired.
    Dead,
}

/// One minute's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Minute {
    /// The minute's start.
    pub start: DateTime<Utc>,
    /// Messages a vendor accepted.
    pub sent: u64,
    /// Vendor calls that failed.
    pub failed: u64,
    /// Messages queued for a later attempt.
    pub queued: u64,
    /// Messages that died or expired.
    pub dead: u64,
}

#[derive(Debug, Default)]
struct Slot {
    /// Minutes since the epoch this slot counts, or 0 before its first count.
    minute: AtomicI64,
    counts: [AtomicU64; 4],
}

/// The last hour's counts.
#[derive(Debug)]
pub struct Activity {
    slots: [Slot; MINUTES],
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }
}

fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

impl Activity {
    /// Counts one `kind` at `at`.
    pub fn count(&self, kind: Kind, at: DateTime<Utc>) {
        let minute = minute_of(at);
        let slot = &self.slots[minute.rem_euclid(MINUTES as i64) as usize];
        let held = slot.minute.load(Ordering::Acquire);
        if held != minute
            && slot
                .minute
                .compare_exchange(held, minute, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for count in &slot.counts {
                count.store(0, Ordering::Release);
            }
        }
        slot.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The 60 minutes up to and including `now`'s, oldest first; minutes with nothing
    /// counted are zeros.
    pub fn last_hour(&self, now: DateTime<Utc>) -> Vec<Minute> {
        let current = minute_of(now);
        (current - MINUTES as i64 + 1..=current)
            .map(|minute| {
                let slot = &self.slots[minute.rem_euclid(MINUTES as i64) as usize];
                let counts = if slot.minute.load(Ordering::Acquire) == minute {
                    slot.counts.each_ref().map(|c| c.load(Ordering::Relaxed))
                } else {
                    [0; 4]
                };
                Minute {
                    start: DateTime::from_timestamp(minute * 60, 0).unwrap_or_default(),
                    sent: counts[Kind::Sent as usize],
                    failed: counts[Kind::Failed as usize],
                    queued: counts[Kind::Queued as usize],
                    dead: counts[Kind::Dead as usize],
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn counts_per_minute_and_forgets_minutes_older_than_an_hour() {
        let activity = Activity::default();
        activity.count(Kind::Sent, at(0));
        activity.count(Kind::Sent, at(30));
        activity.count(Kind::Failed, at(61));
        activity.count(Kind::Queued, at(61));
        activity.count(Kind::Dead, at(125));

        let hour = activity.last_hour(at(125));
        assert_eq!(hour.len(), 60);
        let [.., two_ago, one_ago, now] = hour.as_slice() else {
            panic!("sixty minutes");
        };
        assert_eq!((two_ago.sent, two_ago.failed), (2, 0));
        assert_eq!((one_ago.failed, one_ago.queued), (1, 1));
        assert_eq!(now.dead, 1);
        assert_eq!(
            now.start,
            DateTime::from_timestamp(minute_of(at(125)) * 60, 0).unwrap()
        );

        // An hour later the same slots count new minutes from zero.
        activity.count(Kind::Sent, at(3_600));
        let later = activity.last_hour(at(3_600));
        assert_eq!(later.last().unwrap().sent, 1, "the old minute's 2 are gone");
        assert_eq!(
            later
                .iter()
                .map(|m| m.sent + m.failed + m.queued)
                .sum::<u64>(),
            1 + 1 + 1
        );
    }
}
