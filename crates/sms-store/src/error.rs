//! Errors of opening and migrating a store. Operations on an open store report
//! [`sms_core::StoreError`], the error every backend shares.

use sms_core::StoreError;

/// Why a store could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is unusable; nothing was contacted.
    #[error("invalid store configuration: {field}: {problem}")]
    InvalidConfig {
        /// The configuration key.
        field: &'static str,
        /// What was wrong, and what was expected.
        problem: String,
    },
    /// The database was migrated by a newer build than this one: running against it
    /// could corrupt data, so the store refuses to open.
    #[error(
        "database schema is at version {found}, newer than the {supported} this build knows; upgrade the gateway"
    )]
    SchemaTooNew {
        /// The newest migration recorded in the database.
        found: i64,
        /// The newest migration this build carries.
        supported: i64,
    },
    /// The store failed while opening or migrating (unreachable, refused, bad SQL).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// Whether retrying later may succeed (the database was unreachable).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(StoreError::Unavailable(_)))
    }
}
