//! Versioned schema migrations, embedded in the binary.
//!
//! Each migration is a SQL file under `migrations/postgres/`, applied once, in version
//! order, and recorded in `schema_migrations`. A released migration is never edited:
//! changes go into a new file.

use deadpool_postgres::{Object, Transaction};

use super::error::pg_error;
use crate::Error;

/// One embedded migration.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "keyed_messages_index",
        sql: include_str!("../../migrations/postgres/0002_keyed_messages_index.sql"),
    },
    Migration {
        version: 3,
        name: "pinned_vendor",
        sql: include_str!("../../migrations/postgres/0003_pinned_vendor.sql"),
    },
    Migration {
        version: 4,
        name: "deliveries",
        sql: include_str!("../../migrations/postgres/0004_deliveries.sql"),
    },
    Migration {
        version: 5,
        name: "callbacks",
        sql: include_str!("../../migrations/postgres/0005_callbacks.sql"),
    },
    Migration {
        version: 6,
        name: "resends",
        sql: include_str!("../../migrations/postgres/0006_resends.sql"),
    },
    Migration {
        version: 7,
        name: "unsettled",
        sql: include_str!("../../migrations/postgres/0007_unsettled.sql"),
    },
    Migration {
        version: 8,
        name: "billed_segments",
        sql: include_str!("../../migrations/postgres/0008_billed_segments.sql"),
    },
    Migration {
        version: 9,
        name: "clients_lanes_schedules",
        sql: include_str!("../../migrations/postgres/0009_clients_lanes_schedules.sql"),
    },
    Migration {
        version: 10,
        name: "blocklist_spend",
        sql: include_str!("../../migrations/postgres/0010_blocklist_spend.sql"),
    },
    Migration {
        version: 11,
        name: "callback_kinds",
        sql: include_str!("../../migrations/postgres/0011_callback_kinds.sql"),
    },
];

pub(super) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Applies what is missing; returns the versions applied.
pub(super) async fn apply(client: &mut Object, schema: &str) -> Result<Vec<i64>, Error> {
    let tx = client.transaction().await.map_err(pg_error)?;
    match apply_in(&tx, schema).await {
        Ok(applied) => {
            tx.commit().await.map_err(pg_error)?;
            Ok(applied)
        }
        Err(e) => {
            // Roll back now rather than on drop: a dropped transaction only queues its
            // ROLLBACK, and the advisory lock would be held until the connection next
            // runs, blocking every other instance's migration meanwhile.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn apply_in(tx: &Transaction<'_>, schema: &str) -> Result<Vec<i64>, Error> {
    // Instances starting together serialise here; the lock is released with the
    // transaction, so a crash mid-migration leaves neither a lock nor half a schema.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('sms-store migrations ' || $1::text))",
        &[&schema],
    )
    .await
    .map_err(pg_error)?;
    // `CREATE SCHEMA IF NOT EXISTS` would need the database's CREATE privilege even when
    // the schema exists (as `public` always does), so look first.
    let exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    if !exists {
        // The name was validated as a plain lower-case identifier, so it needs no quoting.
        tx.batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .map_err(pg_error)?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ( \
             version    bigint      PRIMARY KEY, \
             name       text        NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(pg_error)?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    let supported = latest_version();
    if current > supported {
        return Err(Error::SchemaTooNew {
            found: current,
            supported,
        });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(migration.sql).await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(pg_error)?;
        applied.push(migration.version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing_and_files_are_named_after_them() {
        let mut previous = 0;
        for m in MIGRATIONS {
            assert!(m.version > previous, "migration {} out of order", m.version);
            assert!(!m.sql.trim().is_empty());
            previous = m.version;
        }
        assert_eq!(latest_version(), previous);
    }
}
