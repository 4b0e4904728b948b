//! Durable deferred queue and usage ledger: Postgres, and embedded SQLite.
