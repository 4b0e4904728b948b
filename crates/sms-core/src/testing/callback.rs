//! An in-memory callback outbox.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::callback::{
    CallbackCounts, CallbackEvent, CallbackOutbox, CallbackOutcome, ClaimedCallback,
};
use crate::error::StoreError;
use crate::queue::LeaseToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Delivered,
    Failed,
}

#[derive(Debug, Clone)]
struct Row {
    event: CallbackEvent,
    state: State,
    attempts: u32,
    due_at: DateTime<Utc>,
    token: Option<LeaseToken>,
}

/// A callback outbox in a map; atomic per call, lost on restart.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    rows: Mutex<HashMap<uuid::Uuid, Row>>,
}

impl MemoryOutbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CallbackOutbox for MemoryOutbox {
    async fn enqueue(&self, events: &[CallbackEvent]) -> Result<(), StoreError> {
        let mut rows = crate::sync::lock(&self.rows);
        for event in events {
            rows.entry(event.id).or_insert_with(|| Row {
                event: event.clone(),
                state: State::Pending,
                attempts: 0,
                due_at: event.created_at,
                token: None,
            });
        }
        Ok(())
    }

    async fn claim(
        &self,
        _owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedCallback>, StoreError> {
        let mut rows = crate::sync::lock(&self.rows);
        let mut due: Vec<(DateTime<Utc>, uuid::Uuid)> = rows
            .values()
            .filter(|r| r.state == State::Pending && r.due_at <= now)
            .map(|r| (r.due_at, r.event.id))
            .collect();
        due.sort();
        let lease_end = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        Ok(due
            .into_iter()
            .take(limit as usize)
            .map(|(_, id)| {
                let row = rows.get_mut(&id).expect("listed above");
                let token = LeaseToken::new();
                row.attempts += 1;
                row.due_at = lease_end;
                row.token = Some(token);
                ClaimedCallback {
                    event: row.event.clone(),
                    attempts: row.attempts,
                    token,
                }
            })
            .collect())
    }

    async fn settle(
        &self,
        id: uuid::Uuid,
        token: LeaseToken,
        outcome: CallbackOutcome,
        _now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut rows = crate::sync::lock(&self.rows);
        let Some(row) = rows.get_mut(&id) else {
            return Ok(false);
        };
        if row.state != State::Pending || row.token != Some(token) {
            return Ok(false);
        }
        row.token = None;
        match outcome {
            CallbackOutcome::Delivered => row.state = State::Delivered,
            CallbackOutcome::Retry { at, .. } => row.due_at = at,
            CallbackOutcome::Failed { .. } => row.state = State::Failed,
        }
        Ok(true)
    }

    async fn counts(&self) -> Result<CallbackCounts, StoreError> {
        let rows = crate::sync::lock(&self.rows);
        let mut counts = CallbackCounts::default();
        for row in rows.values() {
            match row.state {
                State::Pending => counts.pending += 1,
                State::Delivered => counts.delivered += 1,
                State::Failed => counts.failed += 1,
            }
        }
        Ok(counts)
    }

    async fn purge(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let mut rows = crate::sync::lock(&self.rows);
        let old: Vec<uuid::Uuid> = rows
            .values()
            .filter(|r| r.state != State::Pending && r.event.created_at < before)
            .map(|r| r.event.id)
            .take(limit as usize)
            .collect();
        for id in &old {
            rows.remove(id);
        }
        Ok(old.len() as u64)
    }
}
