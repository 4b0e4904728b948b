//! The board: one small document that every instance of a deployment reads and changes,
//! so that they decide as one (which vendor is current, which rest, which an operator
//! switched off).
//!
//! The document is opaque text to the board. Changes are compare-and-set on a version
//! number: a writer reads the document and its version, works out the new document,
//! and writes it only if the version is still the one it read. A write that lost the
//! race gets the newer document back and works its change out again on it, so no
//! change is ever made on a stale read. The board also tells the time by its own clock,
//! holds short named claims (one holder at a time, until released or expired), and
//! keeps what each instance last reported about itself.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::BoxError;

/// The document as read, with the board's version and clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardRead {
    /// Bumped by every write; 0 while nothing was ever written.
    pub version: u64,
    /// The document; none while nothing was ever written.
    pub doc: Option<String>,
    /// The board's clock when it answered.
    pub now: DateTime<Utc>,
}

/// How a compare-and-set write went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoardWrite {
    /// Written: the document has this version now.
    Written {
        /// The new version.
        version: u64,
    },
    /// Another writer came first: nothing was written; this is what the board holds.
    Conflict(BoardRead),
}

/// The board cannot be reached now.
#[derive(Debug, thiserror::Error)]
#[error("shared board unavailable: {0}")]
pub struct BoardUnavailable(#[source] pub BoxError);

/// A shared, versioned document with compare-and-set writes (see the module docs).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SharedBoard: Send + Sync {
    /// The document, its version and the board's clock, read together.
    async fn read(&self) -> Result<BoardRead, BoardUnavailable>;

    /// Writes `doc` if the version is still `expected` (0: nothing written yet).
    async fn write(&self, expected: u64, doc: &str) -> Result<BoardWrite, BoardUnavailable>;

    /// Takes the claim `name` for `holder` for `ttl`, unless another holder has it;
    /// returns whether `holder` has it now (a holder that claims again keeps it,
    /// without a longer ttl).
    async fn claim(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, BoardUnavailable>;

    /// Gives the claim `name` back, if `holder` still holds it.
    async fn release(&self, name: &str, holder: &str) -> Result<(), BoardUnavailable>;

    /// Keeps `report` as what `instance` says about itself, for `ttl`.
    async fn report(
        &self,
        instance: &str,
        report: &str,
        ttl: Duration,
    ) -> Result<(), BoardUnavailable>;

    /// Every instance's report that has not expired, by instance, in no set order.
    async fn reports(&self) -> Result<Vec<(String, String)>, BoardUnavailable>;

    /// Returns after the next write announced from now on (or a reconnect, after which
    /// writes may have gone unannounced), or never, on a board that cannot announce:
    /// readers poll too.
    async fn changed(&self);
}
