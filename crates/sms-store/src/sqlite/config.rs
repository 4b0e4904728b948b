//! Settings of the SQLite store.

use std::path::PathBuf;

use serde::Deserialize;

/// Where the database file lives and how long to wait for another process' lock.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file; its directory is created if missing. `:memory:` keeps
    /// everything in memory (tests). Default `./data/sms-gateway.db`.
    pub path: PathBuf,
    /// How long a write waits for a lock held by another connection, in milliseconds.
    /// Default 5000.
    pub busy_timeout_ms: u64,
    /// Sync the log to disk at every commit (`synchronous = FULL`), so a message
    /// reported stored survives a power cut. Off (`NORMAL`), a process crash still
    /// loses nothing but a power cut may lose the last commits. Default `true`.
    pub sync_every_commit: bool,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./data/sms-gateway.db"),
            busy_timeout_ms: 5_000,
            sync_every_commit: true,
        }
    }
}

impl SqliteConfig {
    /// The defaults with `path`.
    pub fn with_path(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            ..Self::default()
        }
    }

    pub(super) fn is_in_memory(&self) -> bool {
        self.path.as_os_str() == ":memory:"
    }
}
