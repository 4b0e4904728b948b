//! A board in memory, for one process's tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::Notify;

use crate::board::{BoardRead, BoardUnavailable, BoardWrite, SharedBoard};
use crate::sync::lock;

#[derive(Debug, Default)]
struct State {
    version: u64,
    doc: Option<String>,
    /// By name: the holder and when the claim lapses.
    claims: HashMap<String, (String, Instant)>,
    /// By instance: the report and when it lapses.
    reports: HashMap<String, (String, Instant)>,
    /// While set, every call fails as a cut connection would.
    cut: bool,
}

/// A [`SharedBoard`] in memory: the gateways of one test that share it decide as one,
/// as instances sharing a Redis board do. [`MemoryBoard::cut`] makes it unreachable.
#[derive(Debug, Default)]
pub struct MemoryBoard {
    state: Mutex<State>,
    changed: Notify,
}

impl MemoryBoard {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call fail (`true`) or answer again (`false`), as when the network
    /// to the board is cut and mended; what the board holds is kept.
    pub fn cut(&self, cut: bool) {
        lock(&self.state).cut = cut;
    }

    /// Forgets everything, as a Redis restarted without persistence does: version 0,
    /// no document, no claims, no reports.
    pub fn clear(&self) {
        let mut state = lock(&self.state);
        let cut = state.cut;
        *state = State {
            cut,
            ..State::default()
        };
    }

    /// The document and its version, whether or not the board is cut.
    pub fn peek(&self) -> (u64, Option<String>) {
        let state = lock(&self.state);
        (state.version, state.doc.clone())
    }

    fn open(&self) -> Result<std::sync::MutexGuard<'_, State>, BoardUnavailable> {
        let state = lock(&self.state);
        if state.cut {
            return Err(BoardUnavailable("the memory board is cut".into()));
        }
        Ok(state)
    }
}

#[async_trait]
impl SharedBoard for MemoryBoard {
    async fn read(&self) -> Result<BoardRead, BoardUnavailable> {
        let state = self.open()?;
        Ok(BoardRead {
            version: state.version,
            doc: state.doc.clone(),
            now: Utc::now(),
        })
    }

    async fn write(&self, expected: u64, doc: &str) -> Result<BoardWrite, BoardUnavailable> {
        let mut state = self.open()?;
        if state.version != expected {
            return Ok(BoardWrite::Conflict(BoardRead {
                version: state.version,
                doc: state.doc.clone(),
                now: Utc::now(),
            }));
        }
        state.version += 1;
        state.doc = Some(doc.to_owned());
        let version = state.version;
        drop(state);
        self.changed.notify_waiters();
        Ok(BoardWrite::Written { version })
    }

    async fn claim(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, BoardUnavailable> {
        let mut state = self.open()?;
        let now = Instant::now();
        match state.claims.get(name) {
            Some((held_by, until)) if *until > now => Ok(held_by == holder),
            _ => {
                let until = now
                    .checked_add(ttl)
                    .unwrap_or(now + Duration::from_secs(1 << 32));
                state
                    .claims
                    .insert(name.to_owned(), (holder.to_owned(), until));
                Ok(true)
            }
        }
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), BoardUnavailable> {
        let mut state = self.open()?;
        if state.claims.get(name).is_some_and(|(h, _)| h == holder) {
            state.claims.remove(name);
        }
        Ok(())
    }

    async fn report(
        &self,
        instance: &str,
        report: &str,
        ttl: Duration,
    ) -> Result<(), BoardUnavailable> {
        let mut state = self.open()?;
        let now = Instant::now();
        let until = now
            .checked_add(ttl)
            .unwrap_or(now + Duration::from_secs(1 << 32));
        state
            .reports
            .insert(instance.to_owned(), (report.to_owned(), until));
        Ok(())
    }

    async fn reports(&self) -> Result<Vec<(String, String)>, BoardUnavailable> {
        let mut state = self.open()?;
        let now = Instant::now();
        state.reports.retain(|_, (_, until)| *until > now);
        Ok(state
            .reports
            .iter()
            .map(|(instance, (report, _))| (instance.clone(), report.clone()))
            .collect())
    }

    async fn changed(&self) {
        self.changed.notified().await;
    }
}
