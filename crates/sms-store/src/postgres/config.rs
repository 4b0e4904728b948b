//! Settings of the Postgres store.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// How to reach Postgres and how to pool connections. Every field has a default, so a
/// configuration file names only what differs. Serialised, the URL's password shows as
/// `***`: a printed configuration must not leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgConfig {
    /// Connection URL (`postgres://user:password@host:port/database`) or key=value
    /// string. Default `postgres://postgres@127.0.0.1:5432/postgres`. TLS is not
    /// supported: use a local socket, a private network, or a TLS-terminating proxy.
    #[serde(serialize_with = "serialize_redacted")]
    pub url: String,
    /// Schema holding the tables, created by the migrations if missing. Lower-case
    /// letters, digits and `_`. Default `public`.
    pub schema: String,
    /// Most connections open at once. Default 16.
    pub pool_size: usize,
    /// How long opening one connection may take, in milliseconds. Default 5000.
    pub connect_timeout_ms: u64,
    /// How long an operation waits for a free pooled connection, in milliseconds.
    /// Default 5000.
    pub wait_timeout_ms: u64,
    /// How long one store operation may take in all (waiting, connecting, querying),
    /// in milliseconds; past it the operation fails as unavailable. Guards against a
    /// server that stops answering without closing connections. Default 15000.
    pub operation_timeout_ms: u64,
    /// Apply pending migrations when connecting. Default `true`; turn it off when
    /// migrations are run by a separate deploy step.
    pub migrate_on_connect: bool,
    /// Whose clock times leases: `database` (the default) or `caller`. See
    /// [`LeaseClock`].
    pub lease_clock: LeaseClock,
}

/// Whose clock the Postgres queue times leases with.
///
/// Instances share one database but each has its own clock; a lease written with one
/// instance's time and checked against another's lasts longer or shorter by their
/// skew, and a skew larger than the lease lets two instances hold one message. With
/// [`LeaseClock::Database`] every instance's leases are timed by the one clock of the
/// database server.
///
/// Either way, the lease a claim, a renewal or an enqueue hands back ends `lease_for`
/// after the caller's `now`, in the caller's clock: the gateway compares it with its
/// own clock to decide whether an attempt still fits in the lease. That `now` is taken
/// before the statement runs, so with clocks in agreement it is never later than the
/// end the database stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseClock {
    /// The database server's clock decides: a claim takes the messages due and the
    /// leases lapsed at the database's time, and a claim, a renewal and an enqueue of a
    /// leased message store a lease that ends `lease_for` after the database's time
    /// (the time the statement reached the server).
    /// The `now` passed to them still dates the change (`updated_at`), and the due
    /// times written by `fail`, `release`, `defer` and `retry` are the caller's.
    #[default]
    Database,
    /// The `now` passed to each call decides, as in the other stores: for tests that
    /// drive time by hand, and the shared contract suite.
    Caller,
}

impl Default for PgConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
            schema: "public".to_owned(),
            pool_size: 16,
            connect_timeout_ms: 5_000,
            wait_timeout_ms: 5_000,
            operation_timeout_ms: 15_000,
            migrate_on_connect: true,
            lease_clock: LeaseClock::Database,
        }
    }
}

impl PgConfig {
    /// The defaults with `url`.
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// The same settings with tables in `schema`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub(crate) fn wait_timeout(&self) -> Duration {
        Duration::from_millis(self.wait_timeout_ms)
    }

    pub(crate) fn operation_timeout(&self) -> Duration {
        Duration::from_millis(self.operation_timeout_ms)
    }

    /// Checks what can be checked without contacting the server; `connect` calls it too.
    pub fn validate(&self) -> Result<(), Error> {
        let schema = &self.schema;
        let valid_schema = !schema.is_empty()
            && schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        // The schema name goes into `search_path` and DDL, which take no parameters, so
        // only names that need no quoting are accepted.
        if !valid_schema {
            return Err(Error::InvalidConfig {
                field: "schema",
                problem: format!(
                    "expected 1 to 63 lower-case letters, digits or '_', not starting with a digit, found {schema:?}"
                ),
            });
        }
        if self.pool_size == 0 {
            return Err(Error::InvalidConfig {
                field: "pool_size",
                problem: "expected at least 1 connection, found 0".to_owned(),
            });
        }
        for (field, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("wait_timeout_ms", self.wait_timeout_ms),
            ("operation_timeout_ms", self.operation_timeout_ms),
        ] {
            if value == 0 {
                return Err(Error::InvalidConfig {
                    field,
                    problem: "expected a timeout of at least 1 ms, found 0".to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The URL with any password replaced by `***`, for logs and `Debug`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// `Debug` hides the password: configurations end up in logs.
impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &self.redacted_url())
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("wait_timeout_ms", &self.wait_timeout_ms)
            .field("operation_timeout_ms", &self.operation_timeout_ms)
            .field("migrate_on_connect", &self.migrate_on_connect)
            .field("lease_clock", &self.lease_clock)
            .finish()
    }
}

fn serialize_redacted<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url))
}

fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@') {
            let user_info = &authority[..at];
            if let Some(colon) = user_info.find(':') {
                return format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &user_info[..colon],
                    &rest[at..]
                );
            }
        }
        url.to_owned()
    } else {
        // key=value form: hide the value of `password=`, quoted or not.
        url.split_whitespace()
            .map(|pair| {
                if pair.starts_with("password=") {
                    "password=***"
                } else {
                    pair
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_redacted_url_hide_the_password() {
        let config = PgConfig::with_url("postgres://gateway:hunter2@db:5432/sms?sslmode=disable");
        assert_eq!(
            config.redacted_url(),
            "postgres://gateway:***@db:5432/sms?sslmode=disable"
        );
        assert!(!format!("{config:?}").contains("hunter2"));
        let kv = PgConfig::with_url("host=db user=gateway password=hunter2 dbname=sms");
        assert_eq!(
            kv.redacted_url(),
            "host=db user=gateway password=*** dbname=sms"
        );
        // Without a password nothing changes.
        assert_eq!(
            PgConfig::default().redacted_url(),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
    }

    #[test]
    fn schema_names_that_would_need_quoting_are_refused() {
        for bad in [
            "",
            "Public",
            "1abc",
            "a-b",
            "a;drop table x",
            &"s".repeat(64),
        ] {
            let e = PgConfig::default().schema(bad).validate().unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::InvalidConfig {
                        field: "schema",
                        ..
                    }
                ),
                "{bad:?}: {e}"
            );
        }
        assert!(
            PgConfig::default()
                .schema("sms_gateway_2")
                .validate()
                .is_ok()
        );
        assert!(PgConfig::default().validate().is_ok());
    }

    #[test]
    fn zero_pool_size_and_timeouts_are_refused() {
        let config = PgConfig {
            pool_size: 0,
            ..PgConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(Error::InvalidConfig {
                field: "pool_size",
                ..
            })
        ));
        let config = PgConfig {
            wait_timeout_ms: 0,
            ..PgConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn unspecified_fields_take_their_defaults() {
        let config: PgConfig =
            serde_json::from_str(r#"{"url":"postgres://x@h/d","schema":"s"}"#).unwrap();
        assert_eq!(config.pool_size, 16);
        assert!(config.migrate_on_connect);
        assert_eq!(config.schema, "s");
        assert!(serde_json::from_str::<PgConfig>(r#"{"pool":3}"#).is_err());
    }

    #[test]
    fn leases_use_the_database_clock_unless_the_caller_is_named() {
        assert_eq!(PgConfig::default().lease_clock, LeaseClock::Database);
        let config: PgConfig = serde_json::from_str(r#"{"lease_clock":"caller"}"#).unwrap();
        assert_eq!(config.lease_clock, LeaseClock::Caller);
        let config: PgConfig = serde_json::from_str(r#"{"lease_clock":"database"}"#).unwrap();
        assert_eq!(config.lease_clock, LeaseClock::Database);
        let e = serde_json::from_str::<PgConfig>(r#"{"lease_clock":"local"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
        let shown = serde_json::to_string(&PgConfig::default()).unwrap();
        assert!(shown.contains(r#""lease_clock":"database""#), "{shown}");
    }

    #[test]
    fn serialised_the_password_is_hidden() {
        let config = PgConfig::with_url("postgres://gateway:hunter2@db:5432/sms");
        let shown = serde_json::to_string(&config).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("gateway:***@db"), "{shown}");
    }
}
