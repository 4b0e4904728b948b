//! Integration tests of sms-store, one binary: the contract every backend shares
//! (`sms_core::testing::store_contract`, run against the in-memory fake, SQLite and
//! Postgres, and through the group-commit and tracing wrappers), the delivery log's
//! and the callback outbox's contracts over both backends (with the plans of the
//! Postgres query for unsettled sends and of the callback claim), the exactly-once
//! drain under concurrent claimers, and each backend's own concerns (migrations,
//! schemas, plans, outages, whose clock times leases, the re-send columns).

mod callback;
mod delivery;
mod drain;
mod group_commit;
mod memory;
mod postgres;
mod postgres_lease_clock;
mod postgres_resend;
mod sqlite;
mod support;
mod traced;
