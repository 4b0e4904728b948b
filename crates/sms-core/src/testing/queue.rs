//! An in-memory deferred queue with the same contract as the durable ones.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::ids::{ClientId, IdempotencyKey, MessageId, VendorId};
use crate::phone::PhoneNumber;
use crate::queue::{
    AttemptFailure, DeferredQueue, Enqueued, InitialState, Lease, LeaseToken, MessageStatus,
    NewMessage, QueueReason, QueueStats, StoredMessage,
};
use crate::request::Priority;

/// Claimable messages by the time they become claimable (`next_attempt_at` for queued
/// ones, lease expiry for leased ones), then id: the order a lane is claimed in.
type DueIndex = BTreeSet<(DateTime<Utc>, MessageId)>;

#[derive(Debug, Default)]
struct State {
    messages: HashMap<MessageId, StoredMessage>,
    by_key: HashMap<IdempotencyKey, MessageId>,
    /// The claimable messages of each lane. A message's lane never changes.
    due: HashMap<Priority, DueIndex>,
}

fn claimable_at(m: &StoredMessage) -> Option<DateTime<Utc>> {
    match m.status {
        MessageStatus::Queued => Some(m.next_attempt_at),
        MessageStatus::Leased => m.lease.as_ref().map(|l| l.expires_at),
        _ => None,
    }
}

impl State {
    /// The due index of `lane`.
    fn lane(&mut self, lane: Priority) -> &mut DueIndex {
        self.due.entry(lane).or_default()
    }

    /// Applies `change` to a message, keeping the due index right.
    fn update<T>(
        &mut self,
        id: MessageId,
        change: impl FnOnce(&mut StoredMessage) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let m = self.messages.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        let before = claimable_at(m);
        let out = change(m)?;
        let after = claimable_at(m);
        let lane = m.request.priority();
        if before != after {
            if let Some(t) = before {
                self.lane(lane).remove(&(t, id));
            }
            if let Some(t) = after {
                self.lane(lane).insert((t, id));
            }
        }
        Ok(out)
    }

    /// Applies `change` to a message leased under `token`. A change that refuses does so
    /// before it changes anything, so a refused update leaves the message as it was.
    fn update_leased(
        &mut self,
        id: MessageId,
        token: LeaseToken,
        change: impl FnOnce(&mut StoredMessage) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.update(id, |m| {
            if m.status != MessageStatus::Leased || m.lease.as_ref().map(|l| l.token) != Some(token)
            {
                return Err(StoreError::LeaseLost(id));
            }
            change(m)
        })
    }
}

/// A deferred queue in memory. One mutex guards all of it: fine for tests and benchmarks
/// of the code around it, not a production store.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }
}

fn finish(m: &mut StoredMessage, status: MessageStatus, now: DateTime<Utc>) {
    m.status = status;
    m.lease = None;
    m.updated_at = now;
}

fn record_failure(m: &mut StoredMessage, failure: AttemptFailure) {
    m.pinned_vendor = failure.vendor.clone().filter(|_| failure.pinned);
    if failure.vendor.is_some() {
        m.last_vendor = failure.vendor;
    }
    m.last_error = Some(failure.error);
    m.may_duplicate |= failure.may_duplicate;
}

#[async_trait]
impl DeferredQueue for MemoryQueue {
    async fn enqueue(&self, new: NewMessage) -> Result<Enqueued, StoreError> {
        let mut state = self.state();
        if let Some(key) = new.request.idempotency_key() {
            if let Some(existing) = state.by_key.get(key).and_then(|id| state.messages.get(id)) {
                return Ok(Enqueued::Existing(existing.clone()));
            }
        }
        let (status, lease, last_vendor) = match new.initial {
            InitialState::Queued => (MessageStatus::Queued, None, new.last_vendor),
            InitialState::Leased(lease) => (MessageStatus::Leased, Some(lease), new.last_vendor),
            InitialState::Sent { vendor } => (MessageStatus::Sent, None, Some(vendor)),
        };
        let m = StoredMessage {
            id: new.id,
            request: new.request,
            status,
            reason: new.reason,
            attempts: new.attempts,
            max_attempts: new.max_attempts,
            next_attempt_at: new.next_attempt_at,
            lease,
            last_vendor,
            last_error: new.last_error,
            may_duplicate: new.may_duplicate,
            pinned_vendor: None,
            created_at: new.created_at,
            updated_at: new.created_at,
        };
        if state.messages.contains_key(&m.id) {
            return Err(StoreError::backend(format!(
                "message {} already stored",
                m.id
            )));
        }
        if let Some(key) = m.request.idempotency_key() {
            state.by_key.insert(key.clone(), m.id);
        }
        if let Some(t) = claimable_at(&m) {
            state.lane(m.request.priority()).insert((t, m.id));
        }
        state.messages.insert(m.id, m.clone());
        Ok(Enqueued::Created(m))
    }

    /// A claim with no room kept for normal messages.
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.claim_lanes(owner, now, lease_for, limit, 0).await
    }

    async fn claim_lanes(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
        limit: u32,
        normal_min: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut state = self.state();
        let token = LeaseToken::new();
        let expires_at =
            now + chrono::Duration::from_std(lease_for).map_err(StoreError::backend)?;
        let mut ids: Vec<MessageId> = Vec::new();
        let high_limit = limit.saturating_sub(normal_min);
        for (lane, lane_limit) in [(Priority::High, high_limit), (Priority::Normal, limit)] {
            let left = (lane_limit as usize).saturating_sub(ids.len());
            let due: Vec<MessageId> = state
                .lane(lane)
                .iter()
                .take_while(|(t, _)| *t <= now)
                .take(left)
                .map(|(_, id)| *id)
                .collect();
            ids.extend(due);
        }
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            let m = state.update(id, |m| {
                // Its lease lapsed: the holder may have sent it before it was lost.
                m.may_duplicate |= m.status == MessageStatus::Leased;
                m.status = MessageStatus::Leased;
                m.attempts += 1;
                m.lease = Some(Lease {
                    owner: owner.to_owned(),
                    token,
                    expires_at,
                });
                m.updated_at = now;
                Ok(m.clone())
            })?;
            claimed.push(m);
        }
        Ok(claimed)
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let state = self.state();
        Ok(state
            .due
            .values()
            .filter_map(|lane| lane.first().map(|(t, _)| *t))
            .min())
    }

    async fn cancel(&self, id: MessageId, now: DateTime<Utc>) -> Result<StoredMessage, StoreError> {
        self.state().update(id, |m| {
            if m.status != MessageStatus::Queued {
                return Err(StoreError::WrongStatus {
                    id,
                    status: m.status,
                    expected: "queued",
                });
            }
            finish(m, MessageStatus::Cancelled, now);
            Ok(m.clone())
        })
    }

    async fn complete(
        &self,
        id: MessageId,
        token: LeaseToken,
        vendor: &VendorId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.state().update_leased(id, token, |m| {
            m.last_vendor = Some(vendor.clone());
            finish(m, MessageStatus::Sent, now);
            Ok(())
        })
    }

    async fn fail(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        next_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.state().update_leased(id, token, |m| {
            record_failure(m, failure);
            m.next_attempt_at = next_attempt_at;
            finish(m, MessageStatus::Queued, now);
            Ok(())
        })
    }

    async fn dead(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.state().update_leased(id, token, |m| {
            record_failure(m, failure);
            finish(m, MessageStatus::Dead, now);
            Ok(())
        })
    }

    async fn expire(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.state().update_leased(id, token, |m| {
            finish(m, MessageStatus::Expired, now);
            Ok(())
        })
    }

    /// A release is a deferral due now.
    async fn release(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.defer(id, token, now, now).await
    }

    async fn defer(
        &self,
        id: MessageId,
        token: LeaseToken,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.state().update_leased(id, token, |m| {
            // The claim's attempt is given back: the message was never tried.
            m.attempts = m.attempts.saturating_sub(1);
            m.next_attempt_at = due_at;
            finish(m, MessageStatus::Queued, now);
            Ok(())
        })
    }

    async fn narrow(
        &self,
        id: MessageId,
        token: LeaseToken,
        sent: &[PhoneNumber],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.state().update_leased(id, token, |m| {
            // Refused as the durable stores refuse it: a row with no recipients.
            m.request = m.request.without(sent).ok_or_else(|| {
                StoreError::backend(format!(
                    "message {id} cannot be narrowed to no recipients: every one is among \
                     those sent"
                ))
            })?;
            m.updated_at = now;
            Ok(())
        })
    }

    async fn renew(
        &self,
        id: MessageId,
        token: LeaseToken,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let expires_at =
            now + chrono::Duration::from_std(lease_for).map_err(StoreError::backend)?;
        self.state().update(id, |m| {
            let leased = m.status == MessageStatus::Leased;
            match m.lease.as_mut() {
                Some(lease) if leased && lease.token == token => {
                    lease.expires_at = expires_at;
                    let renewed = lease.clone();
                    m.updated_at = now;
                    Ok(renewed)
                }
                _ => Err(StoreError::LeaseLost(id)),
            }
        })
    }

    async fn retry(&self, id: MessageId, now: DateTime<Utc>) -> Result<StoredMessage, StoreError> {
        self.state().update(id, |m| {
            if !matches!(m.status, MessageStatus::Dead | MessageStatus::Expired) {
                return Err(StoreError::WrongStatus {
                    id,
                    status: m.status,
                    expected: "dead or expired",
                });
            }
            m.attempts = 0;
            m.pinned_vendor = None;
            m.reason = QueueReason::ManualRetry;
            m.next_attempt_at = now;
            finish(m, MessageStatus::Queued, now);
            Ok(m.clone())
        })
    }

    async fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self.state().messages.get(&id).cloned())
    }

    async fn find_by_idempotency_key(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let state = self.state();
        Ok(state
            .by_key
            .get(key)
            .and_then(|id| state.messages.get(id))
            .cloned())
    }

    async fn list(
        &self,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let state = self.state();
        let mut found: Vec<StoredMessage> = state
            .messages
            .values()
            .filter(|m| m.status == status)
            .cloned()
            .collect();
        found.sort_by_key(|m| (m.created_at, m.id));
        found.truncate(limit as usize);
        Ok(found)
    }

    async fn list_for_client(
        &self,
        client: &ClientId,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let state = self.state();
        let mut found: Vec<StoredMessage> = state
            .messages
            .values()
            .filter(|m| m.status == status && m.request.client() == Some(client))
            .cloned()
            .collect();
        found.sort_by_key(|m| (m.created_at, m.id));
        found.truncate(limit as usize);
        Ok(found)
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        let mut stats = QueueStats::default();
        for m in self.state().messages.values() {
            let slot = match m.status {
                MessageStatus::Queued => &mut stats.queued,
                MessageStatus::Leased => &mut stats.leased,
                MessageStatus::Sent => &mut stats.sent,
                MessageStatus::Dead => &mut stats.dead,
                MessageStatus::Expired => &mut stats.expired,
                MessageStatus::Cancelled => &mut stats.cancelled,
            };
            *slot += 1;
        }
        Ok(stats)
    }

    async fn purge_sent(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let mut state = self.state();
        // Oldest first, like the durable stores.
        let mut eligible: Vec<(DateTime<Utc>, MessageId)> = state
            .messages
            .values()
            .filter(|m| m.status == MessageStatus::Sent && m.updated_at < before)
            .map(|m| (m.updated_at, m.id))
            .collect();
        eligible.sort_unstable();
        let doomed: Vec<MessageId> = eligible
            .into_iter()
            .take(limit as usize)
            .map(|(_, id)| id)
            .collect();
        for id in &doomed {
            if let Some(m) = state.messages.remove(id) {
                if let Some(key) = m.request.idempotency_key() {
                    state.by_key.remove(key);
                }
            }
        }
        Ok(doomed.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SmsRequest;
    use chrono::TimeZone;

    #[tokio::test]
    async fn purge_removes_the_oldest_sent_messages_first() {
        let q = MemoryQueue::new();
        let vendor = VendorId::new("aliyun").unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut ids = Vec::new();
        for i in 0..5i64 {
            let request = SmsRequest::new("t", ["1"], ["+8613800138000"]).unwrap();
            let at = t0 + chrono::Duration::seconds(10 - i);
            let mut m = NewMessage::queued(MessageId::new(), request, QueueReason::Accepted, 3, at);
            m.initial = InitialState::Sent {
                vendor: vendor.clone(),
            };
            ids.push((at, q.enqueue(m).await.unwrap().message().id));
        }
        assert_eq!(
            q.purge_sent(t0 + chrono::Duration::seconds(60), 2)
                .await
                .unwrap(),
            2
        );
        ids.sort();
        for (i, (_, id)) in ids.iter().enumerate() {
            assert_eq!(q.get(*id).await.unwrap().is_none(), i < 2, "message {i}");
        }
    }
}
