//! What a drain pass did, counted as it goes.

/// What one drain pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Messages claimed.
    pub claimed: usize,
    /// Delivered.
    pub sent: usize,
    /// Failed and put back with a backoff.
    pub requeued: usize,
    /// Out of attempts or refused for good.
    pub dead: usize,
    /// Past their deliver-by time.
    pub expired: usize,
    /// Updates refused because another claimer holds the message now.
    pub lease_lost: usize,
    /// Given back unattempted (rate limit reached, every vendor disabled, shutdown).
    pub released: usize,
    /// Put back unattempted: due when the first of its vendors' rests ends, when its
    /// recipients' windows have room, or when its client's spend cap is looked at again.
    pub deferred: usize,
}

impl DrainReport {
    /// Adds another report's counts to this one.
    pub(super) fn add(&mut self, other: &DrainReport) {
        self.claimed += other.claimed;
        self.sent += other.sent;
        self.requeued += other.requeued;
        self.dead += other.dead;
        self.expired += other.expired;
        self.lease_lost += other.lease_lost;
        self.released += other.released;
        self.deferred += other.deferred;
    }
}
