//! Integration tests of sms-store, one binary: the contract every backend shares
//! (run against the in-memory fake, SQLite and Postgres), the exactly-once drain under
//! concurrent claimers, and each backend's own concerns (migrations, schemas, plans,
//! outages).

// The contract macros must be defined before the modules that expand them.
#[macro_use]
mod contract;
mod drain;
mod memory;
mod postgres;
mod sqlite;
mod support;
