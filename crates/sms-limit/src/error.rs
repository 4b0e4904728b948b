//! Errors of this crate: bad settings, and a Redis client that cannot be set up or a
//! Redis deployment the limiters do not support.
//!
//! Failures while limiting are reported through `sms_core::LimitError`, the type the
//! limiter traits return; this enum covers construction only.

/// A limiter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range.
    #[error("invalid limiter configuration: {0}")]
    Config(#[from] ConfigError),
    /// The Redis URL could not be parsed, or the client could not be created.
    #[error("invalid redis client settings: {0}")]
    Redis(#[source] fred::error::Error),
    /// The server runs in cluster mode (or the URL asks for a cluster client).
    #[error(
        "redis at {servers} is a Redis Cluster, which is not supported: each request runs \
         one script over several keys (one per recipient) that fall in different hash \
         slots; use a standalone Redis, or a primary with replicas (with Sentinel for \
         failover)"
    )]
    RedisCluster {
        /// The server addresses (`host:port`), without credentials.
        servers: String,
    },
}

/// A setting that is out of range: names the field and says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    /// The field, as written in the configuration (`recipient_windows[1].limit`).
    pub field: String,
    /// What was wrong and what was expected.
    pub problem: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}
