//! Integration tests of sms-store, one binary: the contract every backend shares
//! (`sms_core::testing::store_contract`, run against the in-memory fake, SQLite and
//! Postgres, and through the group-commit and tracing wrappers), the delivery log's,
//! the callback outbox's, the blocklist's and the spend ledger's contracts over both
//! backends (with the plans of the Postgres query for unsettled sends and of the
//! callback claim), the exactly-once drain under concurrent claimers, and each
//! backend's own concerns (migrations, schemas, plans, outages, whose clock times
//! leases, the re-send columns, the lanes' plans).

mod blocklist;
mod callback;
mod delivery;
mod drain;
mod group_commit;
mod memory;
mod postgres;
mod postgres_lanes;
mod postgres_lease_clock;
mod postgres_resend;
mod spend;
mod sqlite;
mod support;
mod traced;
